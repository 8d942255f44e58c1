//! One segment file, written either with direct IO (the default) or through the page cache.
//!
//! Direct IO (`O_DIRECT`, glommio's `DmaFile`) writes from an aligned buffer straight to the
//! device. Through the page cache every appended byte is first copied into a fresh page-cache
//! page by the writing core, then written back by the kernel at the next fdatasync: under
//! acks=all load that copy was more than half of the broker's CPU (`docs/benchmarks.md`).
//!
//! Direct writes must start and end on the device's block boundaries, and a log grows by
//! batches of any length. So the file keeps the bytes of its last, partial block in memory
//! (the tail) and each append writes `tail + records`, padded with zeros to the next
//! boundary, at the tail's block. The next append rewrites that last block with the bytes
//! that were already there plus its own: a block holding acknowledged records is rewritten
//! with the same prefix, as the kernel's writeback rewrites a partial page. The file is
//! therefore up to one block longer than the log; the zeros after the last batch are trimmed
//! when a segment is sealed and, after a restart, by recovery, which stops at the first
//! invalid batch (a zero header is one).
//!
//! File systems without direct IO (tmpfs) get glommio's buffered fallback on the same path.

use std::cell::{Cell, RefCell};
use std::io;
use std::path::Path;
use std::rc::Rc;

use glommio::io::{BufferedFile, DmaFile, ReadResult};
use glommio::sync::Semaphore;

thread_local! {
    static PROBE: (Cell<bool>, Rc<Semaphore>) = (Cell::new(false), Rc::new(Semaphore::new(1)));
}

/// How segment files are written (`--buffered-writes` picks the page cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    #[default]
    Direct,
    Buffered,
}

pub struct SegmentFile {
    kind: Kind,
}

enum Kind {
    Buffered(BufferedFile),
    Direct { file: DmaFile, tail: RefCell<Option<Tail>> },
}

/// The bytes of the file from the block boundary at or below its logical end to that end.
struct Tail {
    block: u64,
    bytes: Vec<u8>,
}

impl Tail {
    fn end(&self) -> u64 {
        self.block + self.bytes.len() as u64
    }
}

impl SegmentFile {
    /// Opens (or creates) a segment file for reading and appending.
    pub async fn open(path: &Path, mode: WriteMode) -> io::Result<SegmentFile> {
        let options = {
            let mut o = glommio::io::OpenOptions::new();
            o.read(true).write(true).create(true);
            o
        };
        let kind = match mode {
            WriteMode::Buffered => Kind::Buffered(options.buffered_open(path).await?),
            WriteMode::Direct => {
                probe_polling(path).await?;
                Kind::Direct { file: options.dma_open(path).await?, tail: RefCell::new(None) }
            }
        };
        Ok(SegmentFile { kind })
    }

    /// Writes `parts`, one after the other, at `position`, the log's logical end of this file.
    pub async fn append(&self, position: u64, parts: &[&[u8]]) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        match &self.kind {
            Kind::Buffered(file) => {
                let written = file.write_at(parts.concat(), position).await?;
                check_written(written, total)
            }
            Kind::Direct { file, tail } => {
                let known = tail.borrow_mut().take().filter(|t| t.end() == position);
                let current = match known {
                    Some(current) => current,
                    None => {
                        // First append since opening, truncating or a failed write: the tail
                        // comes from the file.
                        let block = file.align_down(position);
                        let bytes = match position - block {
                            0 => Vec::new(),
                            len => file.read_at(block, len as usize).await?.to_vec(),
                        };
                        if bytes.len() as u64 != position - block {
                            return Err(io::Error::other(format!(
                                "segment file ends before its log: {} of {} tail bytes",
                                bytes.len(),
                                position - block
                            )));
                        }
                        Tail { block, bytes }
                    }
                };
                let len = current.bytes.len() + total;
                let padded = file.align_up(len as u64) as usize;
                let mut buffer = file.alloc_dma_buffer(padded);
                let out = buffer.as_bytes_mut();
                out[..current.bytes.len()].copy_from_slice(&current.bytes);
                let mut at = current.bytes.len();
                for part in parts {
                    out[at..at + part.len()].copy_from_slice(part);
                    at += part.len();
                }
                out[len..].fill(0);
                let end = position + total as u64;
                let next_block = file.align_down(end);
                let next = Tail { block: next_block, bytes: out[(next_block - current.block) as usize..len].to_vec() };
                let written = file.write_at(buffer, current.block).await?;
                check_written(written, padded)?;
                *tail.borrow_mut() = Some(next);
                Ok(())
            }
        }
    }

    /// Up to `len` bytes from `position`; fewer only past the end of the file.
    pub async fn read_at(&self, position: u64, len: usize) -> io::Result<ReadResult> {
        Ok(match &self.kind {
            Kind::Buffered(file) => file.read_at(position, len).await?,
            Kind::Direct { file, .. } => file.read_at(position, len).await?,
        })
    }

    pub async fn fdatasync(&self) -> io::Result<()> {
        match &self.kind {
            Kind::Buffered(file) => file.fdatasync().await?,
            Kind::Direct { file, .. } => file.fdatasync().await?,
        }
        Ok(())
    }

    pub async fn truncate(&self, size: u64) -> io::Result<()> {
        match &self.kind {
            Kind::Buffered(file) => file.truncate(size).await?,
            Kind::Direct { file, tail } => {
                tail.borrow_mut().take();
                file.truncate(size).await?
            }
        }
        Ok(())
    }

    /// Cuts the padding after the log's `size` bytes (before the file is sealed or synced
    /// as a whole segment).
    pub async fn trim(&self, size: u64) -> io::Result<()> {
        match &self.kind {
            Kind::Buffered(_) => Ok(()),
            Kind::Direct { .. } => self.truncate(size).await,
        }
    }

    pub async fn file_size(&self) -> io::Result<u64> {
        Ok(match &self.kind {
            Kind::Buffered(file) => file.file_size().await?,
            Kind::Direct { file, .. } => file.file_size().await?,
        })
    }

    /// The write unit: padding after the last batch is always shorter.
    pub fn alignment(&self) -> u64 {
        match &self.kind {
            Kind::Buffered(_) => 1,
            Kind::Direct { file, .. } => file.alignment(),
        }
    }

    pub async fn close(self) -> io::Result<()> {
        match self.kind {
            Kind::Buffered(file) => file.close().await?,
            Kind::Direct { file, .. } => file.close().await?,
        }
        Ok(())
    }
}

/// glommio decides, once per thread and device, whether direct reads may go through its polled
/// ring, by reading the first block of the first direct file opened. On an empty file (a new
/// segment) that read succeeds without reaching the device, the answer is wrongly yes, and
/// every later read fails with EOPNOTSUPP on devices without polled queues. So the first
/// direct open on each executor is of a file that holds a block.
async fn probe_polling(segment: &Path) -> io::Result<()> {
    let (done, lock) = PROBE.with(|(done, lock)| (done.get(), lock.clone()));
    if done {
        return Ok(());
    }
    let _permit = lock.acquire_permit(1).await.map_err(|e| io::Error::other(e.to_string()))?;
    if PROBE.with(|(done, _)| done.get()) {
        return Ok(());
    }
    let dir = segment.parent().unwrap_or(Path::new("."));
    let path = dir.join(format!(".direct-io-probe-{:?}", std::thread::current().id()).replace(['(', ')'], ""));
    let written = path.clone();
    super::off_reactor(move || std::fs::write(written, vec![1u8; 4096])).await?;
    let probed = async {
        let file = glommio::io::OpenOptions::new().read(true).dma_open(&path).await?;
        file.read_at(0, 4096).await?;
        file.close().await?;
        Ok::<(), io::Error>(())
    }
    .await;
    let removed = path.clone();
    super::off_reactor(move || std::fs::remove_file(removed)).await?;
    probed?;
    PROBE.with(|(done, _)| done.set(true));
    Ok(())
}

fn check_written(written: usize, len: usize) -> io::Result<()> {
    if written != len {
        return Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write: {written} of {len} bytes")));
    }
    Ok(())
}
