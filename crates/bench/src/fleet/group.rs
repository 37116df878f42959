//! One task serving many device connections: it reads from all of them at once and answers,
//! issues or times messages according to the fleet's role.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, SelectAll, SplitSink};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use twinhub_mqtt::{Packet, Publish};

use super::device::Conn;
use super::{Role, device_id, reported_patch, unix_micros_now};
use crate::latency::Latency;

/// How long a closed loop waits for its last answers after the measured window.
const DRAIN: Duration = Duration::from_secs(10);
/// How often a running group checks whether its window or deadline has passed.
const TICK: Duration = Duration::from_millis(50);

/// What a group is asked to do.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) role: Role,
    /// Responders a requester addresses.
    pub(super) targets: usize,
    /// Requests outstanding at once in this group (closed loops).
    pub(super) budget: usize,
    pub(super) seconds: f64,
    pub(super) warmup: f64,
}

/// What a measuring group reports once.
#[derive(Debug)]
pub(super) struct Measurement {
    pub(super) ops: u64,
    pub(super) errors: u64,
    pub(super) secs: f64,
    pub(super) latency: Latency,
}

/// What every group reports when it stops.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counters {
    pub(super) answered: u64,
    pub(super) disconnected: u64,
}

enum Phase {
    Waiting,
    ClosedLoop {
        measure_from: Instant,
        measure_until: Instant,
        deadline: Instant,
    },
    Desired {
        t0_unix_micros: u64,
        deadline: Instant,
    },
    Done,
}

struct Group {
    plan: Plan,
    indices: Vec<usize>,
    sinks: Vec<SplitSink<Conn, Packet>>,
    alive: Vec<bool>,
    outstanding: Vec<Option<Instant>>,
    arrivals: Vec<Option<u64>>,
    cursor: usize,
    seq: u64,
    phase: Phase,
    latency: Latency,
    ops: u64,
    errors: u64,
    counters: Counters,
}

/// Serves `devices` until `stop`; a measuring role starts when `start` carries a `t0` and sends
/// its one [`Measurement`] on `measured`.
pub(super) async fn run(
    plan: Plan,
    devices: Vec<(usize, Conn)>,
    mut start: watch::Receiver<Option<u64>>,
    stop: CancellationToken,
    measured: mpsc::UnboundedSender<Measurement>,
) -> Counters {
    let count = devices.len();
    let mut group = Group {
        plan,
        indices: Vec::with_capacity(count),
        sinks: Vec::with_capacity(count),
        alive: vec![true; count],
        outstanding: vec![None; count],
        arrivals: vec![None; count],
        cursor: 0,
        seq: 0,
        phase: Phase::Waiting,
        latency: Latency::new(),
        ops: 0,
        errors: 0,
        counters: Counters::default(),
    };
    let mut incoming = SelectAll::new();
    for (slot, (index, conn)) in devices.into_iter().enumerate() {
        let (sink, reads) = conn.split();
        group.indices.push(index);
        group.sinks.push(sink);
        // The trailing `None` tells the loop that this device's connection ended.
        incoming.push(
            reads
                .map(move |item| (slot, Some(item)))
                .chain(stream::iter([(slot, None)])),
        );
    }
    let mut ticker = tokio::time::interval(TICK);
    let mut start_seen = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            changed = start.changed(), if !start_seen => {
                start_seen = true;
                let t0 = if changed.is_ok() { *start.borrow() } else { None };
                if let Some(t0) = t0 {
                    group.begin(t0).await;
                }
            }
            item = incoming.next() => match item {
                Some((slot, Some(Ok(Packet::Publish(publish))))) => group.on_publish(slot, publish).await,
                Some((_, Some(Ok(_)))) => {}
                Some((slot, Some(Err(_)) | None)) => group.on_closed(slot),
                None => {
                    // Every connection is gone; nothing more can be measured.
                    group.finish_if_due(Instant::now(), true, &measured);
                    stop.cancelled().await;
                    break;
                }
            },
            _ = ticker.tick() => {}
        }
        group.finish_if_due(Instant::now(), false, &measured);
    }
    group.close().await;
    group.counters
}

impl Group {
    async fn begin(&mut self, t0_unix_micros: u64) {
        let now = Instant::now();
        match self.plan.role {
            Role::HubReporter | Role::MosquittoRequester => {
                let measure_from = now + Duration::from_secs_f64(self.plan.warmup.max(0.0));
                let measure_until =
                    measure_from + Duration::from_secs_f64(self.plan.seconds.max(0.0));
                self.phase = Phase::ClosedLoop {
                    measure_from,
                    measure_until,
                    deadline: measure_until + DRAIN,
                };
                for _ in 0..self.plan.budget {
                    self.issue().await;
                }
            }
            Role::HubDesired => {
                self.phase = Phase::Desired {
                    t0_unix_micros,
                    deadline: now + Duration::from_secs_f64(self.plan.seconds.max(0.0)),
                };
            }
            Role::HubIdle | Role::TlsIdle | Role::HubMethods | Role::MosquittoResponder => {}
        }
    }

    /// Sends the next request on the next idle device.
    async fn issue(&mut self) {
        let count = self.sinks.len();
        for _ in 0..count {
            let slot = self.cursor % count.max(1);
            self.cursor = self.cursor.wrapping_add(1);
            if !self.alive[slot] || self.outstanding[slot].is_some() {
                continue;
            }
            self.seq += 1;
            let publish = match self.plan.role {
                Role::HubReporter => Publish::at_most_once(
                    format!("$iothub/twin/PATCH/properties/reported/?$rid={}", self.seq),
                    reported_patch(self.seq),
                ),
                _ => {
                    let requester = self.indices[slot];
                    let target = (self.seq as usize)
                        .wrapping_mul(7919)
                        .wrapping_add(requester)
                        % self.plan.targets.max(1);
                    Publish::at_most_once(
                        format!("bench/req/{}", device_id(target)),
                        Bytes::from(format!("{requester}:{}", self.seq)),
                    )
                }
            };
            self.outstanding[slot] = Some(Instant::now());
            if self.sinks[slot]
                .send(Packet::Publish(publish))
                .await
                .is_err()
            {
                self.on_closed(slot);
                self.errors += 1;
                continue;
            }
            return;
        }
    }

    async fn on_publish(&mut self, slot: usize, publish: Publish) {
        match self.plan.role {
            Role::HubMethods => {
                if let Some(rid) = publish
                    .topic
                    .strip_prefix("$iothub/methods/POST/")
                    .and_then(request_id)
                {
                    let answer = Publish::at_most_once(
                        format!("$iothub/methods/res/200/?$rid={rid}"),
                        Bytes::from_static(b"{\"ok\":true}"),
                    );
                    self.answer(slot, answer).await;
                }
            }
            Role::MosquittoResponder => {
                let requester = std::str::from_utf8(&publish.payload)
                    .ok()
                    .and_then(|p| p.split(':').next())
                    .and_then(|r| r.parse::<usize>().ok());
                if let Some(requester) = requester {
                    let answer =
                        Publish::at_most_once(format!("bench/res/{requester}"), publish.payload);
                    self.answer(slot, answer).await;
                }
            }
            Role::HubReporter | Role::MosquittoRequester => {
                let ok = match self.plan.role {
                    Role::HubReporter if publish.topic.starts_with("$iothub/twin/res/") => {
                        publish.topic.starts_with("$iothub/twin/res/204/")
                    }
                    Role::MosquittoRequester if publish.topic.starts_with("bench/res/") => true,
                    _ => return,
                };
                self.on_answer(slot, ok).await;
            }
            Role::HubDesired => {
                if publish
                    .topic
                    .starts_with("$iothub/twin/PATCH/properties/desired/")
                    && self.arrivals[slot].is_none()
                {
                    self.arrivals[slot] = Some(unix_micros_now());
                }
            }
            Role::HubIdle | Role::TlsIdle => {}
        }
    }

    async fn answer(&mut self, slot: usize, answer: Publish) {
        if self.sinks[slot].send(Packet::Publish(answer)).await.is_ok() {
            self.counters.answered += 1;
        } else {
            self.on_closed(slot);
        }
    }

    async fn on_answer(&mut self, slot: usize, ok: bool) {
        let Some(sent) = self.outstanding[slot].take() else {
            return;
        };
        let Phase::ClosedLoop {
            measure_from,
            measure_until,
            ..
        } = self.phase
        else {
            return;
        };
        let now = Instant::now();
        if now >= measure_from && now <= measure_until {
            if ok {
                self.ops += 1;
                self.latency.record(now - sent);
            } else {
                self.errors += 1;
            }
        }
        if now < measure_until {
            self.issue().await;
        }
    }

    /// Disconnects every live device cleanly (MQTT DISCONNECT, then TLS close_notify), so the
    /// servers see orderly goodbyes rather than resets.
    async fn close(&mut self) {
        let mqtt = self.plan.role != Role::TlsIdle;
        let closing = self
            .sinks
            .iter_mut()
            .zip(&self.alive)
            .filter(|(_, alive)| **alive)
            .map(|(sink, _)| async move {
                if mqtt {
                    let _ = sink.feed(Packet::Disconnect).await;
                }
                let _ = sink.close().await;
            });
        let _ = tokio::time::timeout(DRAIN, futures_util::future::join_all(closing)).await;
    }

    fn on_closed(&mut self, slot: usize) {
        if self.alive[slot] {
            self.alive[slot] = false;
            self.counters.disconnected += 1;
        }
        if self.outstanding[slot].take().is_some() {
            self.errors += 1;
        }
    }

    /// Reports the measurement once the window (and the answers still due) are over, or at
    /// once when `force`d because no connection is left.
    fn finish_if_due(
        &mut self,
        now: Instant,
        force: bool,
        measured: &mpsc::UnboundedSender<Measurement>,
    ) {
        let measurement = match self.phase {
            Phase::ClosedLoop {
                measure_until,
                deadline,
                measure_from,
            } => {
                let pending = self.outstanding.iter().filter(|o| o.is_some()).count() as u64;
                if !force && now < deadline && (now < measure_until || pending > 0) {
                    return;
                }
                Measurement {
                    ops: self.ops,
                    errors: self.errors + pending,
                    secs: (measure_until - measure_from).as_secs_f64(),
                    latency: std::mem::take(&mut self.latency),
                }
            }
            Phase::Desired {
                t0_unix_micros,
                deadline,
            } => {
                let live = self.alive.iter().filter(|a| **a).count();
                let arrived = self.arrivals.iter().flatten().count();
                if !force && now < deadline && arrived < live {
                    return;
                }
                let mut latency = Latency::new();
                let mut last = 0;
                for arrival in self.arrivals.iter().flatten() {
                    let after = arrival.saturating_sub(t0_unix_micros);
                    last = last.max(after);
                    latency.record(Duration::from_micros(after));
                }
                Measurement {
                    ops: arrived as u64,
                    errors: (self.sinks.len() - arrived) as u64,
                    secs: last as f64 / 1e6,
                    latency,
                }
            }
            Phase::Waiting | Phase::Done => return,
        };
        self.phase = Phase::Done;
        let _ = measured.send(measurement);
    }
}

/// The `$rid` of a request topic's property bag (`{name}/?$rid=...`).
fn request_id(rest: &str) -> Option<&str> {
    let (_, query) = rest.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("$rid="))
        .filter(|rid| !rid.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_come_from_the_property_bag() {
        assert_eq!(request_id("reboot/?$rid=42"), Some("42"));
        assert_eq!(request_id("reboot/?x=1&$rid=ab"), Some("ab"));
        assert_eq!(request_id("reboot/?$rid="), None);
        assert_eq!(request_id("reboot/"), None);
    }
}
