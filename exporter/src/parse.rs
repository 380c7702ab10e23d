//! Reading an exposition back: a small parser of the Prometheus text format (the samples only)
//! and an HTTP fetch, for `regcache stats` and tests. Not a general client: no escapes beyond
//! `\\`, `\"` and `\n` in label values, no timestamps kept.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of an exposition, in order. Comment lines are skipped; a line that does not
/// parse is an error naming it.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_line(l).ok_or_else(|| format!("cannot parse exposition line: {l}")))
        .collect()
}

fn parse_line(l: &str) -> Option<Sample> {
    let name_end = l.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = l[..name_end].to_string();
    let mut rest = &l[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            };
            rest = &rest[end + 1..];
            labels.push((key, value));
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Sum of the values of the samples named `name` whose labels include all of `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for s in samples.iter().filter(|s| s.name == name) {
        if with.iter().all(|(k, v)| s.label(k) == Some(v)) {
            *found.get_or_insert(0.0) += s.value;
        }
    }
    found
}

/// GETs `http://addr/metrics` (`addr` as `HOST:PORT`) and returns the body.
pub fn fetch(addr: &str, timeout: Duration) -> io::Result<String> {
    let target: SocketAddr = addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no address for {addr}"),
        )
    })?;
    let mut conn = TcpStream::connect_timeout(&target, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP header end"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(io::Error::other(format!("HTTP answer: {status}")));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples() {
        let t = "# HELP a_total x\n# TYPE a_total counter\na_total{result=\"hit\",rank=\"0\"} 5\n\
                 a_total{result=\"miss\"} 2\nb 1.5e3\nh_bucket{le=\"+Inf\"} 7\n\
                 q{v=\"a\\\"b\\\\c\\n\"} 1\n";
        let s = parse(t).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].name, "a_total");
        assert_eq!(s[0].label("result"), Some("hit"));
        assert_eq!(s[0].label("rank"), Some("0"));
        assert_eq!(s[2].value, 1500.0);
        assert_eq!(s[3].label("le"), Some("+Inf"));
        assert_eq!(s[4].label("v"), Some("a\"b\\c\n"));
        assert_eq!(sum(&s, "a_total", &[]), Some(7.0));
        assert_eq!(sum(&s, "a_total", &[("result", "hit")]), Some(5.0));
        assert_eq!(sum(&s, "nope", &[]), None);
        assert!(parse("garbage line\n").is_err());
    }
}
