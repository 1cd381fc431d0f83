//! Where tensors live: the `--device` words and the names the run log writes.

use candle_core::Device;

use crate::params::ParamError;
use crate::text::error_text;

/// Parses `--device`.
///
/// `auto` takes the first GPU when this binary was built with the `cuda` feature and a device
/// answers, else the CPU. An explicit `cuda` that cannot be had is an error naming what is
/// missing, never a silent fall back to the CPU.
pub fn parse_device(spec: &str) -> Result<Device, ParamError> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            return Ok(Device::Cpu);
        }
        "cuda" => 0,
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(ParamError(format!(
                "--device {spec}: expected auto, cpu, cuda or cuda:N (N the GPU's number, from 0)"
            )))
            }
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(ParamError(format!(
            "--device {spec}: this probescope was built without CUDA; rebuild it with \
             `cargo build --release --features cuda` (needs the CUDA toolkit, 12.x or 13.x, \
             and an NVIDIA driver), or use --device cpu"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        ParamError(format!(
            "--device {spec}: no usable CUDA device {ordinal} ({}); `nvidia-smi -L` lists \
                 the GPUs this machine has, or use --device cpu",
            error_text(&e)
        ))
    })
}

/// A device's name as the run log writes it (`cpu`, `cuda:0`).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
