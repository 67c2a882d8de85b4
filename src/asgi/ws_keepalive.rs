//! Keepalive pings on an accepted WebSocket (`--ws-ping-interval`, `--ws-ping-timeout`).
//!
//! Every interval the socket task sends a ping with a fresh 4-byte payload and waits for
//! the pong that echoes it. A client that does not answer within the timeout is taken
//! for gone (a half-open TCP connection, a proxy that dropped it): the task closes the
//! socket and the application gets `websocket.disconnect` with 1006. Pongs that answer
//! nothing we sent (RFC 6455 §5.5.3 allows unsolicited ones) are ignored; the client's
//! own pings are answered by tungstenite. While the socket task has stopped reading
//! because the application is behind (its read-ahead queue is full), a pong may sit
//! unread in the socket: a wait that overlapped such a pause is restarted instead of
//! counted as a miss. This module is the bookkeeping only; the task does the I/O.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// What is due when [`Keepalive::due_at`] has passed.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Send this ping.
    Ping(Bytes),
    /// The client did not answer in time: close the connection.
    Dead,
    /// Nothing (a wait was restarted).
    Nothing,
}

/// The ping in flight: its payload and when its pong is due.
struct Awaiting {
    payload: [u8; 4],
    deadline: Instant,
    /// Reading was paused at some point while waiting.
    stalled: bool,
}

/// One socket's keepalive state.
pub struct Keepalive {
    /// `None`: pings are off.
    interval: Option<Duration>,
    timeout: Duration,
    next_ping: Instant,
    awaiting: Option<Awaiting>,
    sent: u32,
}

impl Keepalive {
    pub fn new(interval: Option<Duration>, timeout: Duration, now: Instant) -> Self {
        Self {
            interval,
            timeout,
            next_ping: now + interval.unwrap_or_default(),
            awaiting: None,
            sent: 0,
        }
    }

    /// When [`Keepalive::on_due`] should next be called; `None` when pings are off.
    pub fn due_at(&self) -> Option<Instant> {
        self.interval?;
        Some(
            self.awaiting
                .as_ref()
                .map_or(self.next_ping, |a| a.deadline),
        )
    }

    /// What to do now that [`Keepalive::due_at`] has passed.
    pub fn on_due(&mut self, now: Instant) -> Due {
        let Some(interval) = self.interval else {
            return Due::Nothing;
        };
        match &mut self.awaiting {
            None => {
                self.sent = self.sent.wrapping_add(1);
                let payload = self.sent.to_be_bytes();
                self.awaiting = Some(Awaiting {
                    payload,
                    deadline: now + self.timeout,
                    stalled: false,
                });
                self.next_ping = now + interval;
                Due::Ping(Bytes::copy_from_slice(&payload))
            }
            Some(a) if a.stalled => {
                a.stalled = false;
                a.deadline = now + self.timeout;
                Due::Nothing
            }
            Some(_) => Due::Dead,
        }
    }

    /// Reading from the socket is paused (the application is behind).
    pub fn reading_paused(&mut self) {
        if let Some(a) = &mut self.awaiting {
            a.stalled = true;
        }
    }

    /// A pong arrived: it settles the ping in flight if it echoes its payload.
    pub fn pong(&mut self, payload: &[u8]) {
        if self
            .awaiting
            .as_ref()
            .is_some_and(|a| a.payload[..] == *payload)
        {
            self.awaiting = None;
        }
    }

    /// The timeout, for log lines.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn ping_payload(due: Due) -> Bytes {
        match due {
            Due::Ping(p) => p,
            other => panic!("expected a ping, got {other:?}"),
        }
    }

    #[test]
    fn off_means_nothing_is_ever_due() {
        let mut k = Keepalive::new(None, SEC, Instant::now());
        assert_eq!(k.due_at(), None);
        assert_eq!(k.on_due(Instant::now()), Due::Nothing);
    }

    #[test]
    fn a_ping_then_its_pong_then_the_next_ping_an_interval_after_the_first() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Some(10 * SEC), 3 * SEC, t0);
        assert_eq!(k.due_at(), Some(t0 + 10 * SEC));
        let p = ping_payload(k.on_due(t0 + 10 * SEC));
        assert_eq!(k.due_at(), Some(t0 + 13 * SEC), "now the pong's deadline");
        k.pong(&p);
        assert_eq!(k.due_at(), Some(t0 + 20 * SEC));
        let q = ping_payload(k.on_due(t0 + 20 * SEC));
        assert_ne!(p, q, "each ping has its own payload");
    }

    #[test]
    fn no_pong_in_time_is_dead_and_a_stray_pong_settles_nothing() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Some(SEC), SEC, t0);
        let p = ping_payload(k.on_due(t0 + SEC));
        k.pong(b"nope");
        k.pong(&[p[0], p[1], p[2], p[3] ^ 1]);
        assert_eq!(k.on_due(t0 + 2 * SEC), Due::Dead);
    }

    #[test]
    fn a_wait_that_overlapped_a_reading_pause_starts_over_once() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Some(SEC), 2 * SEC, t0);
        ping_payload(k.on_due(t0 + SEC));
        k.reading_paused();
        assert_eq!(k.on_due(t0 + 3 * SEC), Due::Nothing);
        assert_eq!(k.due_at(), Some(t0 + 5 * SEC));
        assert_eq!(k.on_due(t0 + 5 * SEC), Due::Dead);
    }

    #[test]
    fn a_pause_with_no_ping_in_flight_changes_nothing() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Some(SEC), SEC, t0);
        k.reading_paused();
        let p = ping_payload(k.on_due(t0 + SEC));
        assert_eq!(
            k.on_due(t0 + 2 * SEC),
            Due::Dead,
            "{p:?} was never answered"
        );
    }
}
