//! `regcache stats`: a human summary of a running process's metrics (its `/metrics` endpoint or
//! node_exporter textfile), so an operator needs no Prometheus to look. Several processes (a
//! directory of textfiles, ranks of a job) are summed.

use regcache_exporter::config::{Config as MetricsConfig, DEFAULT_PORT};
use regcache_exporter::parse::{self, sum, Sample};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// HOST:PORT of a metrics endpoint, a textfile (.prom), or a directory of them. Default:
    /// the address REGCACHE_METRICS_ADDR gives this process (local rank included), else
    /// 127.0.0.1:9464.
    target: Option<String>,
}

pub fn run(a: &Args) -> regcache::Result<ExitCode> {
    let target = match &a.target {
        Some(t) => t.clone(),
        None => default_target(),
    };
    let (source, text) = match read(&target) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("regcache stats: {target}: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let samples = match parse::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("regcache stats: {source}: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if !samples.iter().any(|s| s.name.starts_with("regcache_")) {
        eprintln!("regcache stats: {source}: no regcache metrics there");
        return Ok(ExitCode::FAILURE);
    }
    print!("{}", summary(&source, &samples));
    Ok(ExitCode::SUCCESS)
}

fn default_target() -> String {
    match MetricsConfig::from_env() {
        Ok(Some(MetricsConfig {
            listen: Some(addr), ..
        })) => addr.to_string(),
        _ => format!("127.0.0.1:{DEFAULT_PORT}"),
    }
}

/// (description of the source, exposition text).
fn read(target: &str) -> std::io::Result<(String, String)> {
    let p = Path::new(target);
    if p.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(p)?
            .flatten()
            .map(|e| e.path())
            .filter(|f| {
                let name = f.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with("regcache-") && name.ends_with(".prom")
            })
            .collect();
        files.sort();
        let mut text = String::new();
        for f in &files {
            text.push_str(&std::fs::read_to_string(f)?);
        }
        return Ok((format!("{} ({} files)", p.display(), files.len()), text));
    }
    if p.is_file() {
        return Ok((p.display().to_string(), std::fs::read_to_string(p)?));
    }
    let text = parse::fetch(target, Duration::from_secs(5))?;
    Ok((format!("http://{target}/metrics"), text))
}

/// The summary printed (exposed for tests).
pub fn summary(source: &str, s: &[Sample]) -> String {
    let v = |name: &str| sum(s, name, &[]).unwrap_or(0.0);
    let with = |name: &str, k: &str, val: &str| sum(s, name, &[(k, val)]).unwrap_or(0.0);
    let pct = |num: f64, den: f64| {
        if den > 0.0 {
            format!("{:.1}%", 100.0 * num / den)
        } else {
            "-".to_string()
        }
    };
    let mut out = String::new();
    let infos: Vec<&Sample> = s
        .iter()
        .filter(|x| x.name == "regcache_cache_info")
        .collect();
    let mut who = Vec::new();
    for key in ["job_id", "rank"] {
        let mut vals: Vec<&str> = infos.iter().filter_map(|x| x.label(key)).collect();
        vals.sort();
        vals.dedup();
        if !vals.is_empty() {
            who.push(format!("{key} {}", vals.join(",")));
        }
    }
    let _ = writeln!(
        out,
        "regcache stats from {source}{}",
        if who.is_empty() {
            String::new()
        } else {
            format!(" ({})", who.join(", "))
        }
    );
    let mut backends: Vec<String> = infos
        .iter()
        .map(|x| {
            format!(
                "monitor {}, registrar {}",
                x.label("monitor").unwrap_or("?"),
                x.label("registrar").unwrap_or("?")
            )
        })
        .collect();
    backends.sort();
    backends.dedup();
    let caching = v("regcache_caching");
    let _ = writeln!(
        out,
        "  {:<16}{}; caching {}",
        "cache",
        backends.join(" / "),
        match (infos.len(), caching as usize) {
            (n, c) if c == n => "on".to_string(),
            (_, 0) => "OFF (no working monitor: every request registers)".to_string(),
            (n, c) => format!("on in {c} of {n} processes"),
        }
    );
    if infos.len() > 1 {
        let _ = writeln!(out, "  {:<16}{}", "processes", infos.len());
    }
    let (hits, misses) = (
        with("regcache_lookups_total", "result", "hit"),
        with("regcache_lookups_total", "result", "miss"),
    );
    let uncacheable = v("regcache_uncacheable_requests_total");
    let _ = writeln!(
        out,
        "  {:<16}{} hit rate ({hits} hits, {misses} misses, {uncacheable} one-use)",
        "lookups",
        pct(hits, hits + misses + uncacheable)
    );
    let (fp, drains) = (
        v("regcache_false_positives_total"),
        v("regcache_drains_total"),
    );
    let _ = writeln!(
        out,
        "  {:<16}{} false-positive rate ({fp} of {drains} drains found nothing to invalidate)",
        "drains",
        pct(fp, drains)
    );
    let _ = writeln!(
        out,
        "  {:<16}{} entries invalidated, {} re-registrations, {} evictions",
        "churn",
        v("regcache_invalidated_entries_total"),
        v("regcache_reregistrations_total"),
        v("regcache_evictions_total")
    );
    let _ = writeln!(
        out,
        "  {:<16}{} in {} registrations",
        "pinned now",
        human_bytes(v("regcache_registered_bytes")),
        v("regcache_registered_entries")
    );
    let regs = v("regcache_registrations_total");
    let mean = v("regcache_registration_duration_seconds_sum") / regs.max(1.0);
    let _ = writeln!(
        out,
        "  {:<16}{regs} made, mean {:.1} us, p50 <= {}, p99 <= {}",
        "registrations",
        mean * 1e6,
        quantile(s, 0.5),
        quantile(s, 0.99)
    );
    let failures: Vec<String> = ["resources", "invalid", "other"]
        .iter()
        .map(|c| {
            format!(
                "{c} {}",
                with("regcache_registration_failures_total", "class", c)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "  {:<16}{} ({})",
        "reg. failures",
        v("regcache_registration_failures_total"),
        failures.join(", ")
    );
    // Application counters served alongside (e.g. the demo's).
    let mut others: Vec<&str> = s
        .iter()
        .map(|x| x.name.as_str())
        .filter(|n| !n.starts_with("regcache_") || n.starts_with("regcache_demo_"))
        .collect();
    others.sort();
    others.dedup();
    for name in others {
        let _ = writeln!(out, "  {:<16}{name} = {}", "app", v(name));
    }
    out
}

/// Upper bound of the histogram bucket holding quantile `q` of registration latency.
fn quantile(s: &[Sample], q: f64) -> String {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for x in s
        .iter()
        .filter(|x| x.name == "regcache_registration_duration_seconds_bucket")
    {
        let le: f64 = match x.label("le") {
            Some("+Inf") => f64::INFINITY,
            Some(v) => v.parse().unwrap_or(f64::NAN),
            None => continue,
        };
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, n)) => *n += x.value,
            None => buckets.push((le, x.value)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        return "-".into();
    }
    let (le, _) = buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .copied()
        .unwrap_or((f64::INFINITY, 0.0));
    if le.is_infinite() {
        "> 1 s".into()
    } else if le >= 1e-3 {
        format!("{} ms", le * 1e3)
    } else {
        format!("{} us", (le * 1e6).round())
    }
}

fn human_bytes(n: f64) -> String {
    if n >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", n / (1u64 << 20) as f64)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_two_ranks() {
        let one = |rank: &str, hits: u32| {
            format!(
                "regcache_lookups_total{{rank=\"{rank}\",result=\"hit\"}} {hits}\n\
                 regcache_lookups_total{{rank=\"{rank}\",result=\"miss\"}} 10\n\
                 regcache_uncacheable_requests_total{{rank=\"{rank}\"}} 0\n\
                 regcache_drains_total{{rank=\"{rank}\"}} 4\n\
                 regcache_false_positives_total{{rank=\"{rank}\"}} 1\n\
                 regcache_registered_bytes{{rank=\"{rank}\"}} 1048576\n\
                 regcache_registered_entries{{rank=\"{rank}\"}} 2\n\
                 regcache_caching{{rank=\"{rank}\"}} 1\n\
                 regcache_registrations_total{{rank=\"{rank}\"}} 10\n\
                 regcache_registration_duration_seconds_bucket{{rank=\"{rank}\",le=\"1e-05\"}} 5\n\
                 regcache_registration_duration_seconds_bucket{{rank=\"{rank}\",le=\"5e-05\"}} 10\n\
                 regcache_registration_duration_seconds_bucket{{rank=\"{rank}\",le=\"+Inf\"}} 10\n\
                 regcache_registration_duration_seconds_sum{{rank=\"{rank}\"}} 0.0002\n\
                 regcache_cache_info{{rank=\"{rank}\",monitor=\"uffd\",registrar=\"uring\"}} 1\n\
                 regcache_demo_corrupted_transfers_total{{rank=\"{rank}\"}} 0\n"
            )
        };
        let text = one("0", 30) + &one("1", 50);
        let out = summary("test", &parse::parse(&text).unwrap());
        assert!(out.contains("(rank 0,1)"), "{out}");
        assert!(
            out.contains("monitor uffd, registrar uring; caching on"),
            "{out}"
        );
        assert!(out.contains("processes       2"), "{out}");
        assert!(
            out.contains("80.0% hit rate (80 hits, 20 misses, 0 one-use)"),
            "{out}"
        );
        assert!(
            out.contains("25.0% false-positive rate (2 of 8 drains"),
            "{out}"
        );
        assert!(out.contains("2.0 MiB in 4 registrations"), "{out}");
        assert!(
            out.contains("20 made, mean 20.0 us, p50 <= 10 us, p99 <= 50 us"),
            "{out}"
        );
        assert!(
            out.contains("regcache_demo_corrupted_transfers_total = 0"),
            "{out}"
        );
    }
}
