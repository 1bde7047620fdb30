//! Which backend a command runs on: `--device cpu|cuda|auto`.

use anyhow::{Context, Result};
use ilr::backend::cpu::Cpu;
use ilr::backend::cuda::Cuda;
use ilr::train::Device;

/// The backend chosen for a run.
pub enum Chosen {
    Cpu(Cpu<f32>),
    Cuda(Box<Cuda>),
}

/// Resolves the device: `cuda` opens GPU 0 or fails with the reason; `auto` takes the GPU when it
/// opens and otherwise the CPU, with a one-line note saying why.
pub fn choose(device: Device) -> Result<Chosen> {
    match device {
        Device::Cpu => Ok(Chosen::Cpu(Cpu::new())),
        Device::Cuda => {
            let be = Cuda::new(0).context("--device cuda")?;
            eprintln!("device: {}", be.device_description());
            Ok(Chosen::Cuda(Box::new(be)))
        }
        Device::Auto => match Cuda::new(0) {
            Ok(be) => {
                eprintln!("device: {}", be.device_description());
                Ok(Chosen::Cuda(Box::new(be)))
            }
            Err(e) => {
                eprintln!("note: training on the CPU: {e:#}");
                Ok(Chosen::Cpu(Cpu::new()))
            }
        },
    }
}
