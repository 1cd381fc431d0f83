//! Following a run log that another process is writing (`probescope attach`): complete lines
//! only (a line being written is waited for), and a fresh start when the file is truncated or
//! replaced (log rotation, a rerun with `--force`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::runlog::{parse_header_line, parse_record_line, Record};

/// What a poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum Followed {
    /// The file was truncated or replaced: forget everything, records follow from its start.
    Reset,
    /// A complete record (the header first).
    Record(Box<Record>),
}

/// Reads a growing run log.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    offset: u64,
    pending: Vec<u8>,
    line_no: usize,
}

impl Follower {
    /// Follows `path` (which may not exist yet).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            file: None,
            inode: 0,
            offset: 0,
            pending: Vec::new(),
            line_no: 0,
        }
    }

    /// Whether the file has been opened.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    fn restart(&mut self) {
        self.file = None;
        self.offset = 0;
        self.pending.clear();
        self.line_no = 0;
    }

    /// Reads what was added since the last poll. An error (not a run log, a bad line) names the
    /// file and the line.
    pub fn poll(&mut self) -> anyhow::Result<Vec<Followed>> {
        let name = self.path.display().to_string();
        let mut out = Vec::new();
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Gone (mid-rotation) or not there yet: wait.
                return Ok(out);
            }
            Err(e) => anyhow::bail!("{name}: cannot read it: {e}"),
        };
        let replaced = self.file.is_some() && meta.ino() != self.inode;
        let truncated = self.file.is_some() && meta.len() < self.offset;
        if replaced || truncated {
            self.restart();
            out.push(Followed::Reset);
        }
        if self.file.is_none() {
            let f = File::open(&self.path)
                .map_err(|e| anyhow::anyhow!("{name}: cannot open it: {e}"))?;
            self.inode = f.metadata()?.ino();
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        let got = f.read_to_end(&mut buf)?;
        self.offset += got as u64;
        self.pending.extend_from_slice(&buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.line_no += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record = if self.line_no == 1 {
                Record::Run(parse_header_line(&name, &line)?)
            } else {
                parse_record_line(&name, self.line_no, &line)?
            };
            out.push(Followed::Record(Box::new(record)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::{End, EndStatus, RunLogWriter};
    use std::io::Write;

    fn end(s: f64) -> Record {
        Record::End(End {
            status: EndStatus::Finished,
            message: None,
            elapsed_s: s,
            step: None,
            peak_rss: None,
        })
    }

    #[test]
    fn follows_complete_lines_and_restarts_after_truncation_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let mut f = Follower::new(&path);
        assert!(f.poll().unwrap().is_empty(), "not there yet: wait");
        let h = crate::tui::sample::header("bifurcation", &[]).unwrap();
        let mut w = RunLogWriter::create(&path, false).unwrap();
        w.write(&Record::Run(h.clone())).unwrap();
        let got = f.poll().unwrap();
        assert_eq!(
            got,
            vec![Followed::Record(Box::new(Record::Run(h.clone())))]
        );
        // Half a line: nothing until the rest arrives.
        let line = serde_json::to_string(&end(1.0)).unwrap();
        let (a, b) = line.split_at(10);
        let mut raw = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        raw.write_all(a.as_bytes()).unwrap();
        assert!(f.poll().unwrap().is_empty());
        raw.write_all(format!("{b}\n").as_bytes()).unwrap();
        assert_eq!(
            f.poll().unwrap(),
            vec![Followed::Record(Box::new(end(1.0)))]
        );
        // Truncated and rewritten (a rerun with --force): reset, then the new header.
        drop(w);
        let mut w = RunLogWriter::create(&path, true).unwrap();
        w.write(&Record::Run(h.clone())).unwrap();
        let got = f.poll().unwrap();
        assert_eq!(got[0], Followed::Reset);
        assert_eq!(got[1], Followed::Record(Box::new(Record::Run(h.clone()))));
        // Replaced by another file (rotation): reset.
        let other = dir.path().join("new.jsonl");
        let mut w2 = RunLogWriter::create(&other, false).unwrap();
        w2.write(&Record::Run(h.clone())).unwrap();
        w2.write(&end(2.0)).unwrap();
        std::fs::rename(&other, &path).unwrap();
        let got = f.poll().unwrap();
        assert_eq!(
            got,
            vec![
                Followed::Reset,
                Followed::Record(Box::new(Record::Run(h))),
                Followed::Record(Box::new(end(2.0)))
            ]
        );
    }

    #[test]
    fn a_file_that_is_not_a_run_log_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello\n").unwrap();
        let e = Follower::new(&path).poll().unwrap_err().to_string();
        assert!(
            e.contains("notes.txt") && e.contains("not a probescope run log"),
            "{e}"
        );
    }
}
