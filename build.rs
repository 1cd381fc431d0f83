//! With the `cuda` feature, compiles the online probes' GPU kernels (`src/probe/online.cu`) to
//! PTX for `src/probe/online_gpu.rs` to embed. The feature already needs nvcc (candle's own
//! kernels); `NVCC` names it where it is not on the PATH, and `CUDA_COMPUTE_CAP` (as for
//! candle) the oldest GPU generation to target, 80 (A100) where unset. The PTX is compiled
//! for the GPU by its driver when the program first loads it.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/probe/online.cu");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap: String = env::var("CUDA_COMPUTE_CAP")
        .unwrap_or_else(|_| "80".into())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("online.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", &format!("-arch=compute_{cap}")])
        .arg("src/probe/online.cu")
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed on src/probe/online.cu ({s})"),
        Err(e) => panic!(
            "could not run {nvcc} for the `cuda` feature ({e}): install the CUDA toolkit or set NVCC"
        ),
    }
}
