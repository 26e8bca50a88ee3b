//! The lines `scripts/bench` gathers into the README's performance table: each benchmark
//! prints its headline figures as `figure|<name>|<value>|<aim>|<met>` beside its own report.

/// What a figure should reach.
#[derive(Clone, Copy, Debug)]
#[allow(
    dead_code,
    reason = "each benchmark compiles this module and uses the aims it needs"
)]
pub enum Aim {
    AtLeast(f64),
    AtMost(f64),
}

/// Prints one figure; `value` is shown with `decimals` and judged against `aim`.
pub fn figure(name: &str, value: f64, decimals: usize, unit: &str, aim: Option<Aim>) {
    let (aim_text, met) = match aim {
        None => (String::new(), ""),
        Some(Aim::AtLeast(bound)) => (format!(">= {bound}{unit}"), verdict(value >= bound)),
        Some(Aim::AtMost(bound)) => (format!("<= {bound}{unit}"), verdict(value <= bound)),
    };
    println!("figure|{name}|{value:.decimals$}{unit}|{aim_text}|{met}");
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "not met" }
}
