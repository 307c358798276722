//! A small DNS server for tests (UDP only): A records it is told, changeable at run time.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

/// What the test DNS server answers: for A questions about its names, their addresses (TTL
/// 1 s); SERVFAIL for everything when `fail` is set; `NXDOMAIN` for other names.
#[derive(Default)]
struct Zone {
    a: HashMap<String, Vec<Ipv4Addr>>,
    fail: bool,
    queries: usize,
}

/// A small DNS server (UDP, RFC 1035) whose answers a test changes.
pub struct DnsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    _task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    /// Serve `name` as `a` (more names with [`DnsServer::set`]).
    pub async fn start(name: &str, a: &[Ipv4Addr]) -> DnsServer {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone {
            a: [(name.to_owned(), a.to_vec())].into_iter().collect(),
            ..Zone::default()
        }));
        let z = Arc::clone(&zone);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(answer) = answer(&buf[..n], &z) {
                    let _ = sock.send_to(&answer, from).await;
                }
            }
        });
        DnsServer {
            addr,
            zone,
            _task: task,
        }
    }

    /// Answer `name` with `a` from now on (and stop failing).
    pub fn set(&self, name: &str, a: &[Ipv4Addr]) {
        let mut z = self.zone.lock().unwrap();
        z.a.insert(name.to_owned(), a.to_vec());
        z.fail = false;
    }

    /// Answer SERVFAIL to everything from now on.
    pub fn fail(&self) {
        self.zone.lock().unwrap().fail = true;
    }

    /// Questions received so far.
    pub fn queries(&self) -> usize {
        self.zone.lock().unwrap().queries
    }
}

/// A DNS answer to the query `q` (RFC 1035 §4.1): the question echoed, then A records.
fn answer(q: &[u8], zone: &Mutex<Zone>) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then QTYPE and QCLASS.
    let mut i = 12;
    let mut name = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        name.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = &q[12..i + 4];
    let mut z = zone.lock().unwrap();
    z.queries += 1;
    let found = z.a.get(&name.join(".")).cloned();
    let rcode: u8 = if z.fail {
        2
    } else if found.is_some() {
        0
    } else {
        3
    };
    let records: Vec<Ipv4Addr> = match found {
        Some(a) if rcode == 0 && qtype == 1 => a,
        _ => Vec::new(),
    };
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&q[0..2]); // id
    out.extend_from_slice(&[0x81, 0x80 | rcode]); // response, RD, RA, rcode
    out.extend_from_slice(&[0, 1]); // QDCOUNT
    out.extend_from_slice(&(records.len() as u16).to_be_bytes()); // ANCOUNT
    out.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    out.extend_from_slice(question);
    for ip in records {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]); // name pointer, A, IN
        out.extend_from_slice(&1u32.to_be_bytes()); // TTL 1 s
        out.extend_from_slice(&[0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}
