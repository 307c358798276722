//! `/ws/broadcast`: a message from a WebSocket client on any backend-sample instance reaches the
//! broadcast clients of every instance. With `--redis URL` the instances share a Redis pub/sub
//! channel; without it the broadcast stays within one instance.

use futures_util::StreamExt;
use tokio::sync::broadcast;

/// The Redis channel every instance publishes to and subscribes to.
pub const CHANNEL: &str = "backend-sample:broadcast";

/// Fan-out of broadcast messages to this instance's clients, fed by Redis when configured.
#[derive(Debug, Clone)]
pub struct Broadcast {
    local: broadcast::Sender<String>,
    redis: Option<redis::aio::MultiplexedConnection>,
}

impl Default for Broadcast {
    fn default() -> Self {
        Broadcast {
            local: broadcast::channel(1024).0,
            redis: None,
        }
    }
}

impl Broadcast {
    /// Join the shared channel on the Redis at `url`. Returns once subscribed, so a message
    /// published after the instance is ready is never missed.
    pub async fn connect(url: &str) -> redis::RedisResult<Broadcast> {
        let client = redis::Client::open(url)?;
        let publish = client.get_multiplexed_async_connection().await?;
        let mut sub = client.get_async_pubsub().await?;
        sub.subscribe(CHANNEL).await?;
        let local = broadcast::channel(1024).0;
        let fan_out = local.clone();
        tokio::spawn(async move {
            let mut messages = sub.on_message();
            while let Some(m) = messages.next().await {
                if let Ok(text) = m.get_payload::<String>() {
                    let _ = fan_out.send(text);
                }
            }
            eprintln!("backend-sample: redis subscription ended");
        });
        Ok(Broadcast {
            local,
            redis: Some(publish),
        })
    }

    /// Send `text` to every broadcast client (of every instance, with Redis).
    pub async fn publish(&self, text: String) {
        match &self.redis {
            Some(conn) => {
                let mut conn = conn.clone();
                let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(&text)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = sent {
                    eprintln!("backend-sample: publish failed: {e}");
                }
            }
            None => {
                let _ = self.local.send(text);
            }
        }
    }

    /// A receiver of every message broadcast from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.local.subscribe()
    }
}
