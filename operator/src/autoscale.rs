//! Autoscaling a projector on its lag in seconds (ADR 0054): a pure decision from what the
//! projector reports, the replicas running and the time since the last change, to the
//! replicas wanted. The controller only reads, calls this and writes.

use std::time::Duration;

use crds::projection::Autoscale;

/// Time after a change before replicas are added again: a new replica needs a lease and a
/// catch-up before the lag can show its effect.
pub const SCALE_UP_WINDOW: Duration = Duration::from_secs(60);
/// Time after a change before a replica is taken away: the lag must stay low this long.
pub const SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);
/// At most this many times the replicas in one step up.
const MAX_STEP_FACTOR: i32 = 2;

/// What the autoscaler sees at a reconcile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// Seconds behind the stream head, when the projector reported it.
    pub lag_seconds: Option<f64>,
    /// Replicas the operator asked for last (or `spec.replicas` before the first decision).
    pub current: i32,
    /// Since the operator last changed the replicas; `None` when it never did.
    pub since_last_change: Option<Duration>,
    /// The Entity's partitions, when known: more replicas than partitions would idle.
    pub partitions: Option<u32>,
}

/// The replicas wanted, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub replicas: i32,
    pub reason: String,
}

/// `min..=max` of `autoscale`, `max` clamped to the partitions (and `min` to `max`).
pub fn bounds(autoscale: &Autoscale, partitions: Option<u32>) -> (i32, i32) {
    let cap = partitions.map_or(i32::MAX, |p| i32::try_from(p).unwrap_or(i32::MAX).max(1));
    let max = autoscale.max_replicas.min(cap).max(1);
    let min = autoscale.min_replicas.clamp(1, max);
    (min, max)
}

/// The replicas a projector should run: out of bounds is brought inside at once; otherwise
/// a lag above the target adds replicas in proportion (at most doubling, after
/// [`SCALE_UP_WINDOW`]), a lag below half the target takes one away (after
/// [`SCALE_DOWN_WINDOW`]), and anything between, or an unknown lag, holds.
pub fn decide(autoscale: &Autoscale, seen: Observation) -> Decision {
    let (min, max) = bounds(autoscale, seen.partitions);
    let current = seen.current;
    if current < min || current > max {
        let replicas = current.clamp(min, max);
        return Decision {
            replicas,
            reason: format!("{current} replicas are outside {min}..={max}"),
        };
    }
    let Some(lag) = seen.lag_seconds.filter(|l| l.is_finite() && *l >= 0.0) else {
        return hold(
            current,
            "the projector reports no lag in seconds".to_owned(),
        );
    };
    let target = f64::from(autoscale.target_lag_seconds);
    let waited = |window: Duration| seen.since_last_change.is_none_or(|since| since >= window);
    if lag > target {
        if current >= max {
            return hold(
                current,
                format!("lag {lag:.0}s is above {target}s, at the maximum {max}"),
            );
        }
        if !waited(SCALE_UP_WINDOW) {
            return hold(
                current,
                format!("lag {lag:.0}s is above {target}s; waiting after the last change"),
            );
        }
        let proportional = (f64::from(current) * lag / target).ceil() as i32;
        let replicas = proportional
            .max(current + 1)
            .min(current.saturating_mul(MAX_STEP_FACTOR))
            .min(max);
        return Decision {
            replicas,
            reason: format!("lag {lag:.0}s is above the target {target}s"),
        };
    }
    if lag < target / 2.0 && current > min {
        if !waited(SCALE_DOWN_WINDOW) {
            return hold(
                current,
                format!("lag {lag:.0}s is low; waiting after the last change"),
            );
        }
        return Decision {
            replicas: current - 1,
            reason: format!("lag {lag:.0}s is below half the target {target}s"),
        };
    }
    hold(
        current,
        format!("lag {lag:.0}s is within the target {target}s"),
    )
}

fn hold(replicas: i32, reason: String) -> Decision {
    Decision { replicas, reason }
}

/// Time from RFC 3339 `then` to `now`; `None` when either does not parse or `then` is later.
pub fn elapsed(then: &str, now: &str) -> Option<Duration> {
    let then: jiff::Timestamp = then.parse().ok()?;
    let now: jiff::Timestamp = now.parse().ok()?;
    let seconds = now.as_second().checked_sub(then.as_second())?;
    u64::try_from(seconds).ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Autoscale = Autoscale {
        min_replicas: 1,
        max_replicas: 6,
        target_lag_seconds: 10,
    };

    fn seen(lag: Option<f64>, current: i32, since: Option<u64>) -> Observation {
        Observation {
            lag_seconds: lag,
            current,
            since_last_change: since.map(Duration::from_secs),
            partitions: Some(8),
        }
    }

    fn replicas(observation: Observation) -> i32 {
        decide(&SPEC, observation).replicas
    }

    #[test]
    fn a_growing_lag_adds_replicas_in_proportion_at_most_doubling() {
        assert_eq!(replicas(seen(Some(15.0), 2, None)), 3, "1.5 x 2 replicas");
        assert_eq!(replicas(seen(Some(11.0), 2, None)), 3, "at least one more");
        assert_eq!(
            replicas(seen(Some(100.0), 2, None)),
            4,
            "at most doubling a step"
        );
        assert_eq!(
            replicas(seen(Some(100.0), 4, Some(61))),
            6,
            "capped at maxReplicas"
        );
        assert_eq!(
            replicas(seen(Some(100.0), 6, Some(600))),
            6,
            "held at the maximum"
        );
    }

    #[test]
    fn a_falling_lag_takes_one_replica_away_at_a_time_down_to_the_minimum() {
        assert_eq!(replicas(seen(Some(4.0), 4, Some(301))), 3);
        assert_eq!(replicas(seen(Some(0.0), 2, None)), 1);
        assert_eq!(
            replicas(seen(Some(0.0), 1, None)),
            1,
            "never below minReplicas"
        );
        assert_eq!(
            replicas(seen(Some(6.0), 4, Some(3600))),
            4,
            "between half the target and the target: hold (no flapping band)"
        );
        assert_eq!(
            replicas(seen(Some(10.0), 4, Some(3600))),
            4,
            "at the target: hold"
        );
    }

    #[test]
    fn changes_wait_out_their_stabilisation_window() {
        assert_eq!(replicas(seen(Some(30.0), 2, Some(59))), 2, "up waits 60 s");
        assert_eq!(replicas(seen(Some(30.0), 2, Some(60))), 4);
        assert_eq!(
            replicas(seen(Some(1.0), 3, Some(299))),
            3,
            "down waits 300 s"
        );
        assert_eq!(replicas(seen(Some(1.0), 3, Some(300))), 2);
        let held = decide(&SPEC, seen(Some(30.0), 2, Some(10)));
        assert!(held.reason.contains("waiting"), "{}", held.reason);
    }

    #[test]
    fn never_more_replicas_than_the_entity_has_partitions() {
        let wide = Autoscale {
            min_replicas: 2,
            max_replicas: 32,
            target_lag_seconds: 10,
        };
        let mut observation = seen(Some(1000.0), 4, None);
        observation.partitions = Some(6);
        assert_eq!(bounds(&wide, Some(6)), (2, 6));
        assert_eq!(
            decide(&wide, observation).replicas,
            6,
            "clamped to 6 partitions"
        );
        observation.current = 9;
        observation.lag_seconds = Some(0.0);
        observation.since_last_change = Some(Duration::from_secs(1));
        assert_eq!(
            decide(&wide, observation).replicas,
            6,
            "out of bounds is corrected at once, whatever the window"
        );
        assert_eq!(
            bounds(&wide, Some(1)),
            (1, 1),
            "min follows a max clamped below it"
        );
        assert_eq!(
            bounds(&wide, None),
            (2, 32),
            "partitions unknown: the spec's bounds"
        );
    }

    #[test]
    fn the_time_since_the_last_change_comes_from_the_status() {
        assert_eq!(
            elapsed("2026-12-02T10:00:00Z", "2026-12-02T10:05:00Z"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            elapsed("2026-12-02T10:05:00Z", "2026-12-02T10:00:00Z"),
            None
        );
        assert_eq!(elapsed("yesterday", "2026-12-02T10:00:00Z"), None);
    }

    #[test]
    fn an_unknown_lag_holds_within_bounds() {
        assert_eq!(replicas(seen(None, 3, None)), 3);
        assert_eq!(replicas(seen(Some(f64::NAN), 3, None)), 3);
        assert_eq!(
            replicas(seen(None, 0, None)),
            1,
            "brought up to minReplicas"
        );
        let held = decide(&SPEC, seen(None, 3, None));
        assert!(held.reason.contains("no lag"), "{}", held.reason);
    }
}
