//! Client addresses as text without the formatting machinery (on every proxied request).

use std::io::Write as _;
use std::net::IpAddr;

/// The client IP as text in `buf`, without a heap string (IPv4, the common case, without the
/// formatting machinery).
pub fn ip_text(ip: IpAddr, buf: &mut [u8; 45]) -> &[u8] {
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(_) => {
            let mut w = &mut buf[..];
            let _ = write!(w, "{ip}");
            45 - w.len()
        }
    };
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_formats_v4_and_v6() {
        let mut buf = [0u8; 45];
        assert_eq!(
            ip_text(
                "2001:db8:85a3:8d3:1319:8a2e:370:7348".parse().unwrap(),
                &mut buf
            ),
            b"2001:db8:85a3:8d3:1319:8a2e:370:7348"
        );
        for ip in [
            "0.0.0.0",
            "1.20.255.9",
            "100.99.10.200",
            "255.255.255.255",
            "127.0.0.1",
        ] {
            assert_eq!(ip_text(ip.parse().unwrap(), &mut buf), ip.as_bytes());
        }
    }
}
