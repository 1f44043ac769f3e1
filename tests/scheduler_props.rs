//! Property tests for the drain scheduler and the reconnect hints: for random settings —
//! counts, windows, rates, jitters, including extremes no parser would let through —
//! the plan is finite, ordered, within the length it reports, and never panics; every
//! hint stays within `[0, jitter]`; the parsers refuse what would overflow.

use std::time::Duration;

use proptest::prelude::*;
use wsdrain::drain::DrainSettings;
use wsdrain::drain::scheduler::{FOREVER, plan, stagger_length};
use wsdrain::{hint, values};

fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1e-300),
        Just(f64::MIN_POSITIVE),
        Just(f64::MAX),
        Just(f64::INFINITY),
        Just(f64::NAN),
        values::MIN_RATE..values::MAX_RATE,
        0.0f64..1e-6,
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (0u64..100_000_000_000).prop_map(Duration::from_nanos),
        (0u64..u64::MAX).prop_map(Duration::from_secs),
    ]
}

proptest! {
    #[test]
    fn the_plan_is_finite_ordered_and_within_its_length(
        n in 0usize..2_000,
        window in duration(),
        max_rate in rate(),
    ) {
        let times = plan(n, window, max_rate);
        prop_assert_eq!(times.len(), n);
        prop_assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let length = stagger_length(n, window, max_rate);
        if let Some(last) = times.last() {
            prop_assert!(*last <= length, "last close {:?} after the stagger's end {:?}", last, length);
        }
        let settings = DrainSettings {
            delay: window,
            window,
            max_rate,
            close_timeout: window,
            reconnect_jitter: window,
            ..DrainSettings::default()
        };
        let total = settings.total_length(n);
        prop_assert!(total <= FOREVER);
        prop_assert!(total >= settings.stagger_length(n).min(FOREVER));
        // The bound must be usable as a deadline.
        prop_assert!(tokio::time::Instant::now().checked_add(total).is_some());
    }

    #[test]
    fn hints_stay_within_the_jitter(i in 0usize..5_000, n in 0usize..5_000, jitter in duration()) {
        let max = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
        prop_assert!(u64::from(hint::stratified(i, n, jitter)) <= max);
        prop_assert!(u64::from(hint::next_in_sequence(jitter)) <= max);
    }

    #[test]
    fn accepted_rates_and_durations_plan_without_overflow(
        rate in "[0-9.e+-]{1,12}",
        window in "[0-9]{1,12}(ms|s|m|h|d)",
    ) {
        if let (Ok(r), Ok(w)) = (values::parse_rate(&rate), values::parse_drain_phase(&window)) {
            prop_assert!(r == 0.0 || (values::MIN_RATE..=values::MAX_RATE).contains(&r));
            let length = stagger_length(1_000_000, w, r);
            prop_assert!(length <= Duration::from_secs(1_000_000 * 100 + 24 * 3600));
        }
    }
}
