//! Arrays another framework saved, memory-mapped: a safetensors file, or a folder of `.npy`
//! files (one array each, named by its file). Nothing is read whole: rows are decoded from the
//! mapping when a fit asks for them.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;

use crate::cancel::Cancel;
use crate::params::ParamError;
use crate::probe::{ActivationStats, StatsAccumulator};

/// An element type the files may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// bool, one byte.
    Bool,
    /// u8.
    U8,
    /// i8.
    I8,
    /// u16.
    U16,
    /// i16.
    I16,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// u32.
    U32,
    /// i32.
    I32,
    /// f32.
    F32,
    /// u64.
    U64,
    /// i64.
    I64,
    /// f64.
    F64,
}

impl Elem {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::Bool | Elem::U8 | Elem::I8 => 1,
            Elem::U16 | Elem::I16 | Elem::F16 | Elem::BF16 => 2,
            Elem::U32 | Elem::I32 | Elem::F32 => 4,
            Elem::U64 | Elem::I64 | Elem::F64 => 8,
        }
    }

    /// Whether it is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, Elem::F16 | Elem::BF16 | Elem::F32 | Elem::F64)
    }

    /// Its name as torch and NumPy users know it.
    pub fn name(self) -> &'static str {
        match self {
            Elem::Bool => "bool",
            Elem::U8 => "uint8",
            Elem::I8 => "int8",
            Elem::U16 => "uint16",
            Elem::I16 => "int16",
            Elem::F16 => "float16",
            Elem::BF16 => "bfloat16",
            Elem::U32 => "uint32",
            Elem::I32 => "int32",
            Elem::F32 => "float32",
            Elem::U64 => "uint64",
            Elem::I64 => "int64",
            Elem::F64 => "float64",
        }
    }

    /// Element `i` of `b` (little-endian) as f64.
    #[inline]
    fn get(self, b: &[u8], i: usize) -> f64 {
        let s = self.size();
        let e = &b[i * s..i * s + s];
        match self {
            Elem::Bool | Elem::U8 => e[0] as f64,
            Elem::I8 => e[0] as i8 as f64,
            Elem::U16 => u16::from_le_bytes([e[0], e[1]]) as f64,
            Elem::I16 => i16::from_le_bytes([e[0], e[1]]) as f64,
            Elem::F16 => half::f16::from_bits(u16::from_le_bytes([e[0], e[1]])).to_f64(),
            Elem::BF16 => half::bf16::from_bits(u16::from_le_bytes([e[0], e[1]])).to_f64(),
            Elem::U32 => u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as f64,
            Elem::I32 => i32::from_le_bytes([e[0], e[1], e[2], e[3]]) as f64,
            Elem::F32 => f32::from_le_bytes([e[0], e[1], e[2], e[3]]) as f64,
            Elem::U64 => u64::from_le_bytes(e.try_into().expect("8 bytes")) as f64,
            Elem::I64 => i64::from_le_bytes(e.try_into().expect("8 bytes")) as f64,
            Elem::F64 => f64::from_le_bytes(e.try_into().expect("8 bytes")),
        }
    }

    /// Decodes the elements of `b` into `out` (as f32), one per slot.
    fn decode(self, b: &[u8], out: &mut [f32]) {
        match self {
            // The common case, kept tight: the compiler vectorises it.
            Elem::F32 => {
                for (o, e) in out.iter_mut().zip(b.chunks_exact(4)) {
                    *o = f32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                }
            }
            Elem::BF16 => {
                for (o, e) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o = f32::from_bits((u16::from_le_bytes([e[0], e[1]]) as u32) << 16);
                }
            }
            Elem::F16 => {
                for (o, e) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o = half::f16::from_bits(u16::from_le_bytes([e[0], e[1]])).to_f32();
                }
            }
            _ => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = self.get(b, i) as f32;
                }
            }
        }
    }
}

/// One array of a [`Store`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name: the safetensors key, or the .npy file's stem.
    pub name: String,
    /// The file it is in.
    pub file: PathBuf,
    /// Its element type.
    pub elem: Elem,
    /// Its shape; the first axis is the sample.
    pub shape: Vec<usize>,
    map: usize,
    start: usize,
    len: usize,
}

impl Entry {
    /// Samples (the first axis; 1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Numbers per sample (the product of the other axes).
    pub fn width(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Where it is, for messages: `FILE` (a .npy) or `FILE, tensor NAME` (safetensors).
    pub fn place(&self) -> String {
        if self.file.extension().is_some_and(|e| e == "npy") {
            self.file.display().to_string()
        } else {
            format!("{}, tensor `{}`", self.file.display(), self.name)
        }
    }
}

/// The arrays of one safetensors file or one folder of `.npy` files, memory-mapped.
#[derive(Debug)]
pub struct Store {
    /// The file or folder.
    pub path: PathBuf,
    /// The arrays, in the file's order (safetensors: by position in the file; a folder: by
    /// file name).
    pub entries: Vec<Entry>,
    /// The safetensors file's `__metadata__`, or the folder's `metadata.json`.
    pub metadata: BTreeMap<String, String>,
    maps: Vec<Mmap>,
}

fn bad(msg: String) -> ParamError {
    ParamError(msg)
}

/// Maps `path` (read-only). The file must not be truncated while it is mapped: writers save
/// under another name and rename (the documented protocol).
fn map(path: &Path) -> Result<Mmap, ParamError> {
    let file = File::open(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let len = file
        .metadata()
        .map_err(|e| bad(format!("{}: {e}", path.display())))?
        .len();
    if len < 8 {
        return Err(bad(format!(
            "{}: {len} bytes, too short to be a safetensors or .npy file (a file still being \
             written? save under another name and rename it into place)",
            path.display()
        )));
    }
    // SAFETY: the mapping is read-only; a writer that truncates the file in place could still
    // make a read fault, which is why writers are asked to write-then-rename.
    unsafe { Mmap::map(&file) }.map_err(|e| bad(format!("{}: cannot map it: {e}", path.display())))
}

impl Store {
    /// Opens a safetensors file, or a folder of `.npy` files.
    pub fn open(path: &Path) -> Result<Self, ParamError> {
        if path.is_dir() {
            return Self::open_npy_dir(path);
        }
        if !path.exists() {
            return Err(bad(format!(
                "{}: no such file or folder; give a .safetensors file or a folder of .npy files",
                path.display()
            )));
        }
        if path.extension().is_some_and(|e| e == "npy") {
            return Err(bad(format!(
                "{}: a .npy file holds one array; put one .npy file per tap, and labels.npy, in \
                 a folder and give the folder",
                path.display()
            )));
        }
        Self::open_safetensors(path)
    }

    fn open_safetensors(path: &Path) -> Result<Self, ParamError> {
        let m = map(path)?;
        let (n, meta) = safetensors::SafeTensors::read_metadata(&m).map_err(|e| {
            use safetensors::SafeTensorError as E;
            let why = match e {
                E::MetadataIncompleteBuffer | E::InvalidHeaderLength => {
                    "its size does not match its header (a file still being written? save under \
                     another name and rename it into place)"
                        .to_string()
                }
                other => format!("{other:?}"),
            };
            bad(format!(
                "{}: not a readable safetensors file ({why}); save the activations with \
                 safetensors' save_file, or give a folder of .npy files",
                path.display()
            ))
        })?;
        let mut entries = Vec::new();
        for name in meta.offset_keys() {
            let info = meta.info(&name).expect("a listed tensor");
            use safetensors::Dtype as D;
            let elem = match info.dtype {
                D::BOOL => Elem::Bool,
                D::U8 => Elem::U8,
                D::I8 => Elem::I8,
                D::U16 => Elem::U16,
                D::I16 => Elem::I16,
                D::F16 => Elem::F16,
                D::BF16 => Elem::BF16,
                D::U32 => Elem::U32,
                D::I32 => Elem::I32,
                D::F32 => Elem::F32,
                D::U64 => Elem::U64,
                D::I64 => Elem::I64,
                D::F64 => Elem::F64,
                other => {
                    return Err(bad(format!(
                        "{}, tensor `{name}`: element type {other:?} is not read here; save it \
                         as float32, float16 or bfloat16 (`.float()` in torch)",
                        path.display()
                    )))
                }
            };
            entries.push(Entry {
                name: name.clone(),
                file: path.to_path_buf(),
                elem,
                shape: info.shape.clone(),
                map: 0,
                start: 8 + n + info.data_offsets.0,
                len: info.data_offsets.1 - info.data_offsets.0,
            });
        }
        let metadata = meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            entries,
            metadata,
            maps: vec![m],
        })
    }

    fn open_npy_dir(dir: &Path) -> Result<Self, ParamError> {
        let listing = std::fs::read_dir(dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
        let mut files: Vec<PathBuf> = listing
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "npy"))
            .filter(|p| !hidden(p))
            .collect();
        files.sort_by(|a, b| natural(&a.to_string_lossy(), &b.to_string_lossy()));
        if files.is_empty() {
            return Err(bad(format!(
                "{}: no .npy files in this folder; save one per tap (np.save(f\"{{dir}}/{{tap}}.npy\", \
                 x)) and the classes as labels.npy",
                dir.display()
            )));
        }
        let (mut maps, mut entries) = (Vec::new(), Vec::new());
        for f in files {
            let m = map(&f)?;
            let (elem, shape, start) = parse_npy(&m)
                .map_err(|why| bad(format!("{}: not a readable .npy file: {why}", f.display())))?;
            let len = shape.iter().product::<usize>() * elem.size();
            if m.len() < start + len {
                return Err(bad(format!(
                    "{}: its header says {shape:?} {} ({len} bytes of data), but the file has {} \
                     (a file still being written? save under another name and rename it)",
                    f.display(),
                    elem.name(),
                    m.len().saturating_sub(start)
                )));
            }
            entries.push(Entry {
                name: f
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
                file: f.clone(),
                elem,
                shape,
                map: maps.len(),
                start,
                len,
            });
            maps.push(m);
        }
        let meta_path = dir.join("metadata.json");
        let metadata = if meta_path.is_file() {
            read_metadata_json(&meta_path)?
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            path: dir.to_path_buf(),
            entries,
            metadata,
            maps,
        })
    }

    /// The array called `name`.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The names of its arrays, for messages.
    pub fn names(&self) -> String {
        self.entries
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn bytes(&self, e: &Entry) -> &[u8] {
        &self.maps[e.map][e.start..e.start + e.len]
    }

    /// Hands the pages of the `len` bytes of `e` from `offset`, which reading mapped in, back to
    /// the kernel: they stay in its file cache, but stop counting in this process's memory, so
    /// reading a file larger than the machine's memory only ever holds one block of it.
    fn release_range(&self, e: &Entry, offset: usize, len: usize) {
        #[cfg(unix)]
        // SAFETY: the mapping is a read-only view of a file and no slice of it outlives the
        // reads that called this; dropped pages are read again from the file when touched.
        unsafe {
            let _ = self.maps[e.map].unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                e.start + offset,
                len.min(e.len - offset.min(e.len)),
            );
        }
        #[cfg(not(unix))]
        let _ = (e, offset, len);
    }

    /// Every element of `e` as a whole number, or an error naming it if it holds fractions.
    pub fn integers(&self, e: &Entry) -> Result<Vec<i64>, ParamError> {
        let b = self.bytes(e);
        let n: usize = e.shape.iter().product();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let v = e.elem.get(b, i);
            if v.fract() != 0.0 || !v.is_finite() {
                return Err(bad(format!(
                    "{}: element {i} is {v}; it must hold whole numbers (save it as an integer \
                     type: int64 in torch and NumPy)",
                    e.place()
                )));
            }
            out.push(v as i64);
        }
        Ok(out)
    }

    /// The first element of `e` that is NaN or infinite, as (sample, feature), checking `cancel`
    /// between blocks of samples.
    pub fn first_non_finite(
        &self,
        e: &Entry,
        cancel: &Cancel,
    ) -> anyhow::Result<Option<(usize, usize)>> {
        if !e.elem.is_float() {
            return Ok(None);
        }
        let (w, b) = (e.width(), self.bytes(e));
        let row_bytes = w * e.elem.size();
        let mut buf = vec![0f32; w];
        for blk in cancel.blocks(e.rows(), block_rows(w)) {
            let (start, len) = blk?;
            for r in start..start + len {
                e.elem
                    .decode(&b[r * row_bytes..(r + 1) * row_bytes], &mut buf);
                if let Some(c) = buf.iter().position(|v| !v.is_finite()) {
                    return Ok(Some((r, c)));
                }
            }
            self.release_range(e, start * row_bytes, len * row_bytes);
        }
        Ok(None)
    }

    /// The rows `rows` of `e`, flattened per sample and restricted to the columns `cols` (all
    /// when `None`), as a `[rows.len(), width]` tensor of type and place `to`, decoded in blocks
    /// (a stop is honoured between them). With `stats`, also the statistics of what was read.
    pub fn gather(
        &self,
        e: &Entry,
        (rows, cols): (&[usize], Option<&[u32]>),
        to: (DType, &Device),
        stats: bool,
        cancel: &Cancel,
    ) -> anyhow::Result<(Tensor, Option<ActivationStats>)> {
        let (dtype, device) = to;
        let (w, b) = (e.width(), self.bytes(e));
        let out_w = cols.map_or(w, <[u32]>::len);
        let row_bytes = w * e.elem.size();
        let n = rows.len();
        let step = block_rows(out_w);
        let whole = n <= step;
        // Written block by block, converted straight into the result (see `RowSink`).
        let mut out = if whole {
            None
        } else {
            Some(crate::host::RowSink::new((n, out_w), dtype, device)?)
        };
        let mut acc = StatsAccumulator::default();
        let mut row = vec![0f32; if cols.is_some() { w } else { 0 }];
        for blk in cancel.blocks(n, step) {
            let (start, len) = blk?;
            let mut v = vec![0f32; len * out_w];
            for (k, &r) in rows[start..start + len].iter().enumerate() {
                let src = &b[r * row_bytes..(r + 1) * row_bytes];
                let dst = &mut v[k * out_w..(k + 1) * out_w];
                match cols {
                    None => e.elem.decode(src, dst),
                    Some(c) => {
                        e.elem.decode(src, &mut row);
                        for (d, &j) in dst.iter_mut().zip(c) {
                            *d = row[j as usize];
                        }
                    }
                }
            }
            // The rows just read leave this process's memory (a subset of a wide tap, or a file
            // larger than the machine's memory, would otherwise map all of it in).
            let (first, last) = (rows[start], rows[start + len - 1]);
            let lo = first.min(last) * row_bytes;
            self.release_range(e, lo, (first.max(last) + 1) * row_bytes - lo);
            let part = Tensor::from_vec(v, (len, out_w), device)?;
            if stats {
                acc.add(&part)?;
            }
            match &mut out {
                None => {
                    let s = stats.then(|| acc.finish()).transpose()?;
                    return Ok((part.to_dtype(dtype)?, s));
                }
                Some(o) => o.push(&part)?,
            }
        }
        let s = stats.then(|| acc.finish()).transpose()?;
        let t = match out {
            Some(o) => o.finish()?,
            None => Tensor::zeros((0, out_w), dtype, device)?,
        };
        Ok((t, s))
    }
}

/// Rows per block so that a block of `width` f32 features stays near 64 MB.
fn block_rows(width: usize) -> usize {
    ((64usize << 20) / (4 * width.max(1))).max(1)
}

/// Whether a file or folder is hidden or half-written by convention (`.name`, `name.tmp`,
/// `name.part`, `name.partial`): such names are never read.
pub fn hidden(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.starts_with('.')
        || [".tmp", ".part", ".partial"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// Orders names with their digit runs compared as numbers (`x2` before `x10`).
pub fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, String)> {
        let mut v: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match v.last_mut() {
                Some((ld, t)) if *ld == d => t.push(c),
                _ => v.push((d, c.to_string())),
            }
        }
        v
    }
    let (pa, pb) = (parts(a), parts(b));
    for ((da, ta), (db, tb)) in pa.iter().zip(&pb) {
        let o = if *da && *db {
            let (x, y) = (ta.trim_start_matches('0'), tb.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        } else {
            ta.cmp(tb)
        };
        if o.is_ne() {
            return o;
        }
    }
    pa.len().cmp(&pb.len()).then_with(|| a.cmp(b))
}

/// A folder's `metadata.json`: an object whose values are strings (a list of strings is taken
/// as its items joined by commas).
fn read_metadata_json(path: &Path) -> Result<BTreeMap<String, String>, ParamError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{}: not JSON: {e}", path.display())))?;
    let obj = v.as_object().ok_or_else(|| {
        bad(format!(
            "{}: expected an object such as {{\"taps\": [\"conv1\", \"fc\"]}}",
            path.display()
        ))
    })?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or(()))
                .collect::<Result<Vec<_>, ()>>()
                .map_err(|()| {
                    bad(format!(
                        "{}: `{k}` must be a string or a list of strings",
                        path.display()
                    ))
                })?
                .join(","),
            _ => {
                return Err(bad(format!(
                    "{}: `{k}` must be a string or a list of strings",
                    path.display()
                )))
            }
        };
        out.insert(k.clone(), s);
    }
    Ok(out)
}

/// Parses a `.npy` header: the element type, the shape, and where the data starts. Only
/// C-ordered, little-endian (or one-byte) arrays of plain numbers are taken.
pub fn parse_npy(b: &[u8]) -> Result<(Elem, Vec<usize>, usize), String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("it does not start with the .npy magic bytes (\\x93NUMPY)".into());
    }
    let (hlen, hstart) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            if b.len() < 12 {
                return Err("the header is cut short".into());
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => return Err(format!("format version {v} is not known (1, 2 or 3)")),
    };
    let header = b
        .get(hstart..hstart + hlen)
        .ok_or("the header is cut short")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let value_of = |key: &str| -> Result<&str, String> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or_else(|| format!("the header has no '{key}'"))?;
        let rest = &header[at + key.len() + 2..];
        let colon = rest.find(':').ok_or("a header entry has no value")?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = value_of("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("'descr' is not a simple type (a structured array?); save a plain numeric array")?;
    let (order, code) = descr.split_at(1.min(descr.len()));
    if order == ">" && !code.ends_with('1') {
        return Err(format!(
            "its elements are big-endian ({descr}); save it with .astype('<{code}')"
        ));
    }
    let elem = match code {
        "b1" => Elem::Bool,
        "u1" => Elem::U8,
        "i1" => Elem::I8,
        "u2" => Elem::U16,
        "i2" => Elem::I16,
        "f2" => Elem::F16,
        "u4" => Elem::U32,
        "i4" => Elem::I32,
        "f4" => Elem::F32,
        "u8" => Elem::U64,
        "i8" => Elem::I64,
        "f8" => Elem::F64,
        _ => {
            return Err(format!(
                "element type '{descr}' is not read here; save float32, float16 or float64 \
                 features and integer labels"
            ))
        }
    };
    let fortran = value_of("fortran_order")?;
    if fortran.starts_with("True") {
        return Err("it is in Fortran order; save np.ascontiguousarray(x)".into());
    }
    let shape = value_of("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("'shape' is not a tuple")?;
    let dims = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("'shape' {inner:?} is not a tuple of whole numbers"))?;
    Ok((elem, dims, hstart + hlen))
}

/// A `.npy` file's bytes for a C-ordered little-endian array (what [`parse_npy`] reads): a
/// version 1 header, padded to 64 bytes, then `data`. Used by the tests and the docs' examples.
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    let pad = 64 - (10 + header.len() + 1) % 64;
    header.push_str(&" ".repeat(pad % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_headers_round_trip_and_bad_ones_say_why() {
        let data: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b = npy_bytes("<f4", &[2, 3], &data);
        assert_eq!(b.len() % 64, data.len() % 64);
        let (elem, shape, start) = parse_npy(&b).unwrap();
        assert_eq!(
            (elem, shape.clone(), start % 64),
            (Elem::F32, vec![2, 3], 0)
        );
        let mut out = vec![0f32; 6];
        elem.decode(&b[start..], &mut out);
        assert_eq!(out, [1.5, -2.0, 3.25, 0.0, 7.0, 8.0]);
        // A 1-axis shape is written `(n,)`.
        let (_, shape, _) = parse_npy(&npy_bytes("<i8", &[4], &[0; 32])).unwrap();
        assert_eq!(shape, vec![4]);
        // NumPy's own header for a big-endian array, a Fortran-ordered one, a record type.
        let e = parse_npy(&npy_bytes(">f4", &[2], &[0; 8])).unwrap_err();
        assert!(e.contains("big-endian"), "{e}");
        let mut f = npy_bytes("<f4", &[2, 2], &[0; 16]);
        let at = f.windows(5).position(|w| w == b"False").unwrap();
        f[at..at + 5].copy_from_slice(b"True ");
        let e = parse_npy(&f).unwrap_err();
        assert!(e.contains("Fortran"), "{e}");
        let e = parse_npy(&npy_bytes("<c8", &[2], &[0; 16])).unwrap_err();
        assert!(e.contains("'<c8' is not read"), "{e}");
        let e = parse_npy(b"PK\x03\x04 a zip file, not npy").unwrap_err();
        assert!(e.contains("magic"), "{e}");
    }

    #[test]
    fn every_element_type_decodes_to_its_value() {
        let cases: [(Elem, Vec<u8>, f32); 9] = [
            (Elem::U8, vec![200], 200.0),
            (Elem::I8, vec![0xfe], -2.0),
            (Elem::I16, (-300i16).to_le_bytes().to_vec(), -300.0),
            (
                Elem::F16,
                half::f16::from_f32(0.5).to_bits().to_le_bytes().to_vec(),
                0.5,
            ),
            (
                Elem::BF16,
                half::bf16::from_f32(-3.0).to_bits().to_le_bytes().to_vec(),
                -3.0,
            ),
            (Elem::I32, 123456i32.to_le_bytes().to_vec(), 123456.0),
            (Elem::F64, 0.25f64.to_le_bytes().to_vec(), 0.25),
            (Elem::I64, (-7i64).to_le_bytes().to_vec(), -7.0),
            (Elem::Bool, vec![1], 1.0),
        ];
        for (elem, bytes, want) in cases {
            let mut out = [0f32];
            elem.decode(&bytes, &mut out);
            assert_eq!(out[0], want, "{elem:?}");
            assert_eq!(elem.get(&bytes, 0) as f32, want, "{elem:?}");
        }
    }

    #[test]
    fn natural_order_compares_numbers_as_numbers() {
        let mut v = vec!["step-10", "step-9", "step-100", "a", "step-009b"];
        v.sort_by(|a, b| natural(a, b));
        assert_eq!(v, ["a", "step-9", "step-009b", "step-10", "step-100"]);
    }
}
