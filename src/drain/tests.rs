//! The drain's ordering and state, on a real registry and a real tokio runtime (the
//! sockets are in `tests/drain.rs` and `tests/drain_edges.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::connections::Refused;

fn settings(delay_ms: u64, window_ms: u64) -> DrainSettings {
    DrainSettings {
        delay: Duration::from_millis(delay_ms),
        window: Duration::from_millis(window_ms),
        max_rate: 0.0,
        close_timeout: Duration::from_millis(300),
        reconnect_jitter: Duration::from_secs(1),
    }
}

fn start(delay_ms: u64, window_ms: u64) -> (Arc<Drain>, Arc<Connections>) {
    let conns = Arc::new(Connections::default());
    let drain = Arc::new(Drain::new(
        settings(delay_ms, window_ms),
        conns.clone(),
        Metrics::new(),
    ));
    tokio::spawn(run(drain.clone()));
    (drain, conns)
}

async fn wait_phase(drain: &Drain, phase: Phase) {
    let mut rx = drain.phase_tx.subscribe();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| *p == phase))
        .await
        .expect("phase reached in time")
        .expect("controller alive");
}

/// The snapshot race: once the stagger has started, a connection that registers is
/// either refused or closed by the schedule — never left for the deadline.
#[tokio::test]
async fn a_connection_registered_after_the_stagger_began_is_refused() {
    let (drain, conns) = start(0, 200);
    let early = conns.register(1, 100).expect("serving");
    assert!(drain.trigger(Trigger::Graceful, Source::Operator));
    wait_phase(&drain, Phase::Staggering).await;
    match conns.register(2, 100) {
        Err(refused) => assert_eq!(refused, Refused::Sealed),
        Ok(late) => {
            // On the old code this registration was accepted and never scheduled.
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(
                late.handle.command(),
                crate::connections::Command::Close,
                "registered after the snapshot, and never scheduled"
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(early.handle.close_reason(), Some(CloseReason::Drain));
}

#[tokio::test]
async fn the_trigger_answers_with_the_state_it_caused() {
    let (drain, _conns) = start(5_000, 1_000);
    assert!(drain.trigger(Trigger::Graceful, Source::Operator));
    let status = drain.status();
    assert_eq!(status.phase, Phase::Announcing);
    assert!(status.draining && status.started.is_some() && status.deadline.is_some());
    assert!(!drain.trigger(Trigger::Graceful, Source::Operator));
}

#[tokio::test]
async fn an_operators_drain_can_be_cancelled_and_a_signals_cannot() {
    let (drain, conns) = start(0, 60_000);
    let kept = conns.register(1, 100).expect("serving");
    let other = conns.register(2, 100).expect("serving");
    assert_eq!(drain.cancel(), Err(CancelRefused::NotDraining));
    drain.trigger(Trigger::Graceful, Source::Operator);
    wait_phase(&drain, Phase::Staggering).await;
    drain.cancel().expect("an operator's drain is cancelled");
    assert_eq!(drain.phase(), Phase::Serving);
    assert!(!drain.is_draining() && drain.deadline().is_none());
    assert!(conns.register(3, 100).is_ok(), "registry unsealed");
    // 60 s window: neither connection's turn had come, and none comes now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(kept.handle.close_reason(), None);
    assert_eq!(other.handle.close_reason(), None);

    // Drained again, this time by the kubelet: not cancellable.
    drain.trigger(Trigger::Graceful, Source::Prestop);
    wait_phase(&drain, Phase::Staggering).await;
    assert!(matches!(
        drain.cancel(),
        Err(CancelRefused::PodTerminating(_))
    ));
    // A signal during an operator's drain makes it the pod's.
    let (drain, _conns) = start(5_000, 1_000);
    drain.trigger(Trigger::Graceful, Source::Operator);
    drain.trigger(Trigger::Immediate, Source::Signal);
    assert!(drain.cancel().is_err());
}

#[tokio::test]
async fn the_reported_deadline_covers_connections_that_arrive_while_announcing() {
    let conns = Arc::new(Connections::default());
    let drain = Arc::new(Drain::new(
        DrainSettings {
            max_rate: 10.0,
            ..settings(200, 100)
        },
        conns.clone(),
        Metrics::new(),
    ));
    tokio::spawn(run(drain.clone()));
    let mut regs = vec![conns.register(1, 1000).expect("serving")];
    drain.trigger(Trigger::Graceful, Source::Operator);
    let first = drain.deadline().expect("deadline set at the trigger");
    // 19 more arrive while announcing; at 10 closes/s the stagger now takes 2 s.
    for id in 2..=20 {
        regs.push(
            conns
                .register(id, 1000)
                .expect("announce phase still serves"),
        );
    }
    wait_phase(&drain, Phase::Staggering).await;
    let second = drain.deadline().expect("deadline");
    assert!(
        second >= first + Duration::from_secs(1),
        "the deadline follows the stagger the drain actually runs"
    );
}
