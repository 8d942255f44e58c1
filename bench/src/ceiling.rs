//! This machine's physical limits, measured in the same run as a workload so results can be
//! stated as a fraction of them: loopback TCP throughput (one writer thread, one reader
//! thread, as a producer and a broker would be) and the latency and rate of a durable log
//! append (a 4 KiB write + fdatasync), raw with O_DIRECT and through the page cache, and the
//! disk's write throughput in a broker's pattern (several files, O_DIRECT writes of a
//! produced batch's size, an fdatasync every few writes).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::stats::{histogram, LatencySummary};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ceilings {
    pub loopback: Loopback,
    /// 4 KiB appends with O_DIRECT (or buffered, when the file system refuses O_DIRECT).
    pub direct_append_fdatasync: DiskSync,
    /// 4 KiB buffered appends + fdatasync: the path a broker on buffered files pays.
    pub buffered_append_fdatasync: DiskSync,
    /// Absent from results written before it was measured.
    #[serde(default)]
    pub write_throughput: Option<WriteThroughput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteThroughput {
    pub files: usize,
    pub write_bytes: usize,
    pub writes_per_fdatasync: usize,
    pub o_direct: bool,
    pub mb_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Loopback {
    pub write_size_bytes: usize,
    pub seconds: f64,
    pub bytes: u64,
    pub mb_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskSync {
    pub directory: String,
    pub o_direct: bool,
    /// Why O_DIRECT was not used, if it was asked for and refused.
    pub fallback_reason: Option<String>,
    pub append_bytes: usize,
    pub ops: u64,
    pub ops_per_s: f64,
    pub mb_per_s: f64,
    pub latency: LatencySummary,
}

pub fn measure(dir: &Path, seconds: f64) -> Result<Ceilings, String> {
    let loopback = loopback(seconds, 256 << 10)?;
    let direct_append_fdatasync = append_fdatasync(dir, seconds, true)?;
    let buffered_append_fdatasync = append_fdatasync(dir, seconds, false)?;
    let write_throughput = Some(write_throughput(dir, seconds, WRITE_FILES, WRITE_BYTES, WRITES_PER_SYNC)?);
    Ok(Ceilings { loopback, direct_append_fdatasync, buffered_append_fdatasync, write_throughput })
}

/// One writer thread per file, as a broker's partitions on two cores write with io_uring.
const WRITE_FILES: usize = 8;
/// About one produced batch of a 1 KiB, linger 1 ms overload workload per partition.
const WRITE_BYTES: usize = 64 << 10;
const WRITES_PER_SYNC: usize = 4;

/// Sequential O_DIRECT writes of `write_bytes` to `files` files at once, each file
/// fdatasynced every `per_sync` writes: MB/s over all files. Falls back to buffered writes
/// where O_DIRECT is refused.
pub fn write_throughput(dir: &Path, seconds: f64, files: usize, write_bytes: usize, per_sync: usize) -> Result<WriteThroughput, String> {
    let direct_ok = std::sync::atomic::AtomicBool::new(true);
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..files)
            .map(|i| {
                let direct_ok = &direct_ok;
                scope.spawn(move || -> Result<u64, String> {
                    let path = dir.join(format!(".odradek-bench-throughput-{}-{i}", std::process::id()));
                    let open = |direct: bool| {
                        let mut o = OpenOptions::new();
                        o.write(true).create(true).truncate(true);
                        if direct {
                            o.custom_flags(libc::O_DIRECT);
                        }
                        o.open(&path)
                    };
                    let raw = vec![0x5au8; write_bytes + APPEND];
                    let shift = (APPEND - raw.as_ptr() as usize % APPEND) % APPEND;
                    let buf = &raw[shift..shift + write_bytes];
                    let mut file = open(true).map_err(|e| e.to_string())?;
                    if file.write_all_at(buf, 0).is_err() {
                        direct_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                        file = open(false).map_err(|e| e.to_string())?;
                    }
                    let (mut offset, mut written, mut writes) = (0u64, 0u64, 0usize);
                    let end = Instant::now() + Duration::from_secs_f64(seconds);
                    let result = (|| -> std::io::Result<()> {
                        while Instant::now() < end {
                            file.write_all_at(buf, offset)?;
                            written += write_bytes as u64;
                            writes += 1;
                            if writes % per_sync == 0 {
                                file.sync_data()?;
                            }
                            offset = (offset + write_bytes as u64) % FILE_MAX;
                        }
                        file.sync_data()
                    })();
                    let _ = std::fs::remove_file(&path);
                    result.map_err(|e| format!("writes in {}: {e}", dir.display()))?;
                    Ok(written)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().map_err(|_| "writer panicked".to_owned())?).sum::<Result<u64, String>>()
    })?;
    Ok(WriteThroughput {
        files,
        write_bytes,
        writes_per_fdatasync: per_sync,
        o_direct: direct_ok.load(std::sync::atomic::Ordering::Relaxed),
        mb_per_s: total as f64 / seconds / 1e6,
    })
}

pub fn loopback(seconds: f64, write_size: usize) -> Result<Loopback, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Instant)> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok((total, Instant::now()));
            }
            total += n as u64;
        }
    });
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let chunk = vec![0x5au8; write_size];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        stream.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    drop(stream);
    let (bytes, done) = reader.join().map_err(|_| "loopback reader panicked")?.map_err(|e| e.to_string())?;
    let elapsed = done.duration_since(start).as_secs_f64();
    Ok(Loopback { write_size_bytes: write_size, seconds: elapsed, bytes, mb_per_s: bytes as f64 / elapsed / 1e6 })
}

const APPEND: usize = 4096;
/// Bounds the file: the test wraps around to the start past this size.
const FILE_MAX: u64 = 256 << 20;

pub fn append_fdatasync(dir: &Path, seconds: f64, direct: bool) -> Result<DiskSync, String> {
    let path = dir.join(format!(".odradek-bench-ceiling-{}", std::process::id()));
    let mut fallback_reason = None;
    let open = |direct: bool| -> std::io::Result<File> {
        let mut o = OpenOptions::new();
        o.write(true).create(true).truncate(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(&path)
    };
    // O_DIRECT wants the buffer, offset and length aligned to the logical block size; 4096
    // covers every common device. Aligning inside a larger Vec needs no unsafe allocation.
    let raw = vec![0xa5u8; APPEND * 2];
    let shift = (APPEND - raw.as_ptr() as usize % APPEND) % APPEND;
    let buf = &raw[shift..shift + APPEND];
    let mut use_direct = direct;
    let mut file = match open(direct) {
        Ok(f) => f,
        Err(e) if direct => {
            fallback_reason = Some(format!("open with O_DIRECT: {e}"));
            use_direct = false;
            open(false).map_err(|e| e.to_string())?
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if use_direct {
        if let Err(e) = file.write_at(buf, 0) {
            fallback_reason = Some(format!("O_DIRECT write: {e}"));
            use_direct = false;
            file = open(false).map_err(|e| e.to_string())?;
        }
    }
    let mut h = histogram();
    let mut offset = 0u64;
    let mut ops = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let result = (|| -> std::io::Result<()> {
        while Instant::now() < end {
            let t = Instant::now();
            file.write_all_at(buf, offset)?;
            file.sync_data()?;
            h.saturating_record(t.elapsed().as_micros() as u64);
            ops += 1;
            offset = (offset + APPEND as u64) % FILE_MAX;
        }
        Ok(())
    })();
    let elapsed = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| format!("append + fdatasync in {}: {e}", dir.display()))?;
    Ok(DiskSync {
        directory: dir.display().to_string(),
        o_direct: use_direct,
        fallback_reason,
        append_bytes: APPEND,
        ops,
        ops_per_s: ops as f64 / elapsed,
        mb_per_s: (ops * APPEND as u64) as f64 / elapsed / 1e6,
        latency: LatencySummary::of(&h, true),
    })
}

pub fn print(c: &Ceilings) {
    println!("machine ceilings");
    println!(
        "  loopback TCP ({} KiB writes): {:.0} MB/s",
        c.loopback.write_size_bytes / 1024,
        c.loopback.mb_per_s
    );
    for (name, d) in [("O_DIRECT", &c.direct_append_fdatasync), ("buffered", &c.buffered_append_fdatasync)] {
        let how = if d.o_direct { "O_DIRECT".to_string() } else if name == "O_DIRECT" {
            format!("buffered (O_DIRECT refused: {})", d.fallback_reason.as_deref().unwrap_or("?"))
        } else {
            "buffered".to_string()
        };
        println!(
            "  4 KiB append + fdatasync, {how}: {:.0} ops/s, p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            d.ops_per_s, d.latency.p50_us, d.latency.p99_us, d.latency.p99_9_us, d.latency.max_us
        );
    }
    if let Some(w) = &c.write_throughput {
        println!(
            "  disk writes, {} files at once, {} KiB {} writes, fdatasync every {}: {:.0} MB/s",
            w.files,
            w.write_bytes / 1024,
            if w.o_direct { "O_DIRECT" } else { "buffered" },
            w.writes_per_fdatasync,
            w.mb_per_s
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ceilings_measure_something() {
        let l = loopback(0.05, 64 << 10).unwrap();
        assert!(l.bytes > 0 && l.mb_per_s > 0.0);
        let dir = std::env::temp_dir();
        let d = append_fdatasync(&dir, 0.05, true).unwrap();
        assert!(d.ops > 0);
        assert_eq!(d.latency.count, d.ops);
        assert!(d.o_direct || d.fallback_reason.is_some());
        let w = write_throughput(&dir, 0.05, 2, 64 << 10, 2).unwrap();
        assert!(w.mb_per_s > 0.0, "{w:?}");
    }
}
