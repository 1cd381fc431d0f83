//! `probescope data fetch`: downloads a dataset's four files from its public mirrors.
//!
//! Each file is streamed into `NAME.gz.part` beside its final place while its MD5 is computed;
//! only a file whose MD5 is the published one is renamed into place, so an interrupted or
//! corrupted download never leaves a bad file where the reader looks, and the next fetch simply
//! starts that file again. Files already present with the right MD5 are kept.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::mnist::{self, Which, FILES};
use crate::params::ParamError;

/// The MD5 of a file, as lowercase hex.
pub fn md5_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already there with the right checksum.
    Present,
    /// Downloaded from this URL.
    Downloaded(String),
}

fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

/// Downloads `url` into `dest` (through `dest.part`), checking the MD5 against `md5`.
fn download(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    md5: &str,
    show: bool,
) -> Result<(), String> {
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let total = resp.body().content_length();
    let bar = if show {
        let b = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_message(
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let part = part_path(dest);
    let result = (|| -> Result<(), String> {
        let mut out = File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        let mut reader = resp.body_mut().as_reader();
        let mut h = Md5::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| format!("download cut off: {e}"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| format!("{}: {e}", part.display()))?;
            got += n as u64;
            bar.set_position(got);
        }
        if let Some(t) = total {
            if got != t {
                return Err(format!("download cut off after {got} of {t} bytes"));
            }
        }
        let sum = hex(&h.finalize());
        if sum != md5 {
            return Err(format!(
                "checksum mismatch: MD5 {sum}, the published one is {md5}; the mirror's copy is damaged"
            ));
        }
        out.sync_all()
            .map_err(|e| format!("{}: {e}", part.display()))?;
        std::fs::rename(&part, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        Ok(())
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// Fetches the four files of `which` into `data_dir/<name>/`, trying `mirrors` (base URLs ending
/// in `/`) in order for each file. Returns what happened to each file.
pub fn fetch(
    which: Which,
    data_dir: &Path,
    mirrors: &[String],
    show_progress: bool,
) -> anyhow::Result<Vec<(String, Outcome)>> {
    let dir = data_dir.join(which.name());
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create it: {e}", dir.display()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut report = Vec::new();
    for (name, md5) in FILES.iter().zip(which.md5s()) {
        let file = format!("{name}.gz");
        let dest = dir.join(&file);
        if dest.is_file() && md5_file(&dest).ok().as_deref() == Some(md5) {
            report.push((file, Outcome::Present));
            continue;
        }
        let mut failures = Vec::new();
        let mut done = None;
        for base in mirrors {
            let url = format!("{}{file}", with_slash(base));
            match download(&agent, &url, &dest, md5, show_progress) {
                Ok(()) => {
                    done = Some(url);
                    break;
                }
                Err(e) => failures.push(format!("  {url}: {e}")),
            }
        }
        match done {
            Some(url) => report.push((file, Outcome::Downloaded(url))),
            None => anyhow::bail!(
                "could not download {file}:\n{}\nWithout a network: download the four files ({}) \
                 from any MNIST mirror on another machine and copy them into {}; their MD5s are \
                 checked when you run `probescope data fetch {}` again",
                failures.join("\n"),
                FILES.map(|f| format!("{f}.gz")).join(", "),
                dir.display(),
                which.name()
            ),
        }
    }
    // A last check that the reader accepts what was fetched.
    mnist::load(data_dir, which)?;
    Ok(report)
}

fn with_slash(base: &str) -> String {
    if base.ends_with('/') {
        base.to_string()
    } else {
        format!("{base}/")
    }
}

/// `probescope data fetch DATASET [--dir DIR] [--mirror URL]... [--only-given]`.
pub fn fetch_command(
    dataset: &str,
    dir: Option<PathBuf>,
    given: &[String],
    only_given: bool,
) -> anyhow::Result<()> {
    let which = Which::parse(dataset).ok_or_else(|| {
        ParamError(format!(
            "data fetch {dataset}: unknown dataset; the datasets are: {}",
            Which::ALL.map(|w| w.name()).join(", ")
        ))
    })?;
    if only_given && given.is_empty() {
        return Err(ParamError("--only-given needs at least one --mirror URL".into()).into());
    }
    let mut mirrors: Vec<String> = given.to_vec();
    if !only_given {
        mirrors.extend(which.mirrors().iter().map(|s| s.to_string()));
    }
    let dir = dir.unwrap_or_else(mnist::default_data_dir);
    let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = fetch(which, &dir, &mirrors, show)?;
    for (file, outcome) in &report {
        match outcome {
            Outcome::Present => eprintln!("probescope: {file}: already there, checksum ok"),
            Outcome::Downloaded(url) => {
                eprintln!("probescope: {file}: downloaded from {url}, checksum ok")
            }
        }
    }
    eprintln!(
        "probescope: {} is ready in {}",
        which.name(),
        dir.join(which.name()).display()
    );
    Ok(())
}
