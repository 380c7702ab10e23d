//! node_exporter textfile output: one `.prom` file per process, replaced atomically (written to
//! a hidden temporary file in the same directory, then renamed over the old one), so the
//! collector never reads a half-written file.

use crate::config::Config;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file this process writes in `dir`: `regcache-rank<R>[-job<J>].prom` under a launcher that
/// gives ranks, else `regcache-pid<P>.prom`.
pub(crate) fn path_for(dir: &Path, cfg: &Config) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    let name = match cfg.label("rank") {
        Some(rank) => match cfg.label("job_id") {
            Some(job) => format!("regcache-rank{}-job{}.prom", clean(rank), clean(job)),
            None => format!("regcache-rank{}.prom", clean(rank)),
        },
        None => format!("regcache-pid{}.prom", std::process::id()),
    };
    dir.join(name)
}

/// Replaces `path` with `contents` atomically. The temporary file does not end in `.prom`, so
/// node_exporter ignores it, and carries our pid, so two writers never share it.
pub(crate) fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("regcache-exporter-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_atomically_and_leaves_no_temporary() {
        let d = tempdir("atomic");
        let p = d.join("regcache-pid1.prom");
        write_atomic(&p, "a 1\n").unwrap();
        // A reader holding the old file keeps seeing it whole: the new one is a new inode.
        let old = fs::File::open(&p).unwrap();
        write_atomic(&p, "a 2\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "a 2\n");
        assert_eq!(io::read_to_string(old).unwrap(), "a 1\n");
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["regcache-pid1.prom"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unwritable_directory_is_an_error() {
        let p = Path::new("/nonexistent-regcache-dir/regcache-pid1.prom");
        assert!(write_atomic(p, "x").is_err());
    }

    #[test]
    fn file_names() {
        let mut cfg = Config::disabled();
        let d = Path::new("/d");
        assert_eq!(
            path_for(d, &cfg),
            d.join(format!("regcache-pid{}.prom", std::process::id()))
        );
        cfg.labels = vec![
            ("rank".into(), "7".into()),
            ("job_id".into(), "12.batch/x".into()),
        ];
        assert_eq!(
            path_for(d, &cfg),
            d.join("regcache-rank7-job12_batch_x.prom")
        );
    }
}
