//! The drain's ordering and state, on a real registry and a real tokio runtime (the
//! sockets are in `tests/drain.rs` and `tests/drain_edges.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::registry::Refused;

/// What a relay does with the drain when it ends (`connection::relay_connection`).
/// `step` lines the threads up at each point where another thread's relay may run.
fn relay_ended(
    drain: &Drain,
    registration: crate::registry::Registration,
    step: &std::sync::Barrier,
) {
    drain.connection_ended(registration);
    step.wait();
}

fn settings(delay_ms: u64, window_ms: u64) -> DrainSettings {
    DrainSettings {
        delay: Duration::from_millis(delay_ms),
        window: Duration::from_millis(window_ms),
        max_rate: 0.0,
        close_timeout: Duration::from_millis(300),
        reconnect_jitter: Duration::from_secs(1),
        ..DrainSettings::default()
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
                crate::registry::Command::Close,
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

/// A test's stand-in for another thread, run at one instant of [`Drain::trigger`].
type Interleaved = Box<dyn FnOnce(&Drain)>;

thread_local! {
    /// Run once by [`Drain::trigger`] right after it decided, on the triggering thread:
    /// what another thread could do at that instant.
    static AFTER_DECISION: std::cell::RefCell<Option<Interleaved>> =
        std::cell::RefCell::new(None);
}

/// The test hook [`Drain::trigger`] calls (compiled only in tests).
pub(super) fn after_trigger_decision(drain: &Drain) {
    if let Some(hook) = AFTER_DECISION.with(|h| h.borrow_mut().take()) {
        hook(drain);
    }
}

/// `DELETE /drain` landing between a signal's trigger and the moment the drain becomes
/// the signal's: the cancel must be refused, and the drain go on. Forced with the hook,
/// so the interleaving happens on every run.
#[tokio::test]
async fn a_cancel_racing_a_signal_never_loses_the_signals_drain() {
    for source in [Source::Signal, Source::Prestop] {
        let (drain, _conns) = start(10_000, 100);
        assert!(drain.trigger(Trigger::Graceful, Source::Operator));
        let cancelled = Arc::new(Mutex::new(None));
        let seen = cancelled.clone();
        AFTER_DECISION.with(|h| {
            *h.borrow_mut() = Some(Box::new(move |d: &Drain| {
                *seen.lock().expect("lock") = Some(d.cancel());
            }));
        });
        drain.trigger(Trigger::Graceful, source);
        let result = cancelled.lock().expect("lock").take().expect("hook ran");
        assert!(
            matches!(result, Err(CancelRefused::PodTerminating(_))),
            "{source:?}: the racing cancel answered {result:?}"
        );
        assert!(drain.is_draining(), "{source:?}: the drain was lost");
        assert_eq!(drain.status().source, Some(source.as_str()));
        assert_eq!(
            drain.cancel(),
            Err(CancelRefused::PodTerminating(source.as_str()))
        );
    }
}

/// Closes a cancelled drain sent are not the next drain's: a connection that ends
/// during the next drain after a close from the cancelled one is not counted in its
/// `closed_by_schedule`, and `GET /drain` after the cancel shows no old counts.
#[tokio::test]
async fn a_cancelled_drains_closes_are_not_counted_by_the_next() {
    let (drain, conns) = start(0, 0);
    let early = conns.register(1, 100).expect("serving");
    let done_early = conns.register(2, 100).expect("serving");
    drain.trigger(Trigger::Graceful, Source::Operator);
    wait_phase(&drain, Phase::Closing).await;
    assert_eq!(early.handle.close_reason(), Some(CloseReason::Drain));
    drain.connection_ended(done_early);
    assert_eq!(drain.status().closed_by_schedule, 1);
    drain.cancel().expect("an operator's drain is cancelled");
    let status = drain.status();
    assert_eq!(
        (
            status.closed,
            status.closed_by_schedule,
            status.open_at_stagger
        ),
        (0, 0, 0),
        "counts of the cancelled drain after the cancel"
    );
    // A new drain; the old close is still under way and ends now.
    let fresh = conns.register(3, 100).expect("unsealed");
    drain.trigger(Trigger::Graceful, Source::Operator);
    wait_phase(&drain, Phase::Closing).await;
    drain.connection_ended(early);
    assert_eq!(
        drain.status().closed_by_schedule,
        0,
        "the cancelled drain's close counted by the new one"
    );
    drain.connection_ended(fresh);
    assert_eq!(drain.status().closed_by_schedule, 1);
}

/// Relays ending at the same instants on several threads: each does what a relay does
/// at its end (the drain's books, leaving the registry). The remaining gauge ends at exactly
/// 0 and every close is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_is_exact_when_relays_end_on_several_threads() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    for round in 0..5 {
        let (drain, conns) = start(0, 0);
        let regs: Vec<_> = (0..THREADS * PER_THREAD)
            .map(|i| conns.register(i as u64, usize::MAX).expect("serving"))
            .collect();
        drain.trigger(Trigger::Graceful, Source::Operator);
        wait_phase(&drain, Phase::Closing).await;
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let mut regs = regs.into_iter();
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let mine: Vec<_> = regs.by_ref().take(PER_THREAD).collect();
                let drain = drain.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    // In lock-step: the threads' relays end at the same instants.
                    for reg in mine {
                        barrier.wait();
                        relay_ended(&drain, reg, &barrier);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(
            drain.metrics.drain_remaining.get(),
            0,
            "round {round}: remaining after every relay ended"
        );
        assert_eq!(
            drain.status().closed_by_schedule,
            (THREADS * PER_THREAD) as u64
        );
    }
}
