//! The burn device everything that runs the IR as a burn network uses: the agents and
//! fine-tuning (autodiff) and the `burn` runtime and teachers (inference).
//!
//! Backend, chosen at run time (one line says which): burn's CPU backend `flex`, or — in a
//! build with the `wgpu` feature — burn-wgpu. `auto` takes a GPU adapter (discrete, then
//! integrated) when one answers and `flex` otherwise; a CPU Vulkan driver (lavapipe) is used
//! only when asked for (`wgpu`), since for networks this small it is slower than `flex`.

use burn::prelude::Device;
use std::sync::OnceLock;

/// Which backend the agents train on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A GPU adapter if the build has wgpu and one answers, else `flex`.
    Auto,
    Cpu,
    /// burn-wgpu on the default adapter (any kind, CPU Vulkan drivers included).
    Wgpu,
}

impl Backend {
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "auto" => Some(Backend::Auto),
            "cpu" => Some(Backend::Cpu),
            "wgpu" => Some(Backend::Wgpu),
            _ => None,
        }
    }
}

static CHOICE: OnceLock<Backend> = OnceLock::new();

/// Sets the backend for this process (the CLI's `--agent-device`); the first call wins.
/// Without a call, `ONNX_PRUNE_AGENT_DEVICE` (auto|cpu|wgpu) decides, else `auto`.
pub fn select(b: Backend) {
    let _ = CHOICE.set(b);
}

fn chosen() -> Backend {
    *CHOICE.get_or_init(|| {
        std::env::var("ONNX_PRUNE_AGENT_DEVICE")
            .ok()
            .and_then(|s| Backend::parse(&s))
            .unwrap_or(Backend::Auto)
    })
}

/// The device agents and fine-tuning train on (autodiff), and a line saying which.
pub fn device() -> (Device, String) {
    static DEV: OnceLock<(Device, String)> = OnceLock::new();
    DEV.get_or_init(|| pick(chosen())).clone()
}

/// The same backend without autodiff (inference: the `burn` runtime, teachers).
pub fn infer_device() -> (Device, String) {
    let (d, line) = device();
    (d.inner(), line)
}

fn cpu(why: &str) -> (Device, String) {
    (
        Device::flex().autodiff(),
        format!("burn backend: flex (CPU){why}"),
    )
}

#[cfg(not(feature = "wgpu"))]
pub(crate) fn pick(b: Backend) -> (Device, String) {
    match b {
        Backend::Wgpu => cpu("; this build has no wgpu (rebuild with --features wgpu)"),
        _ => cpu(""),
    }
}

#[cfg(feature = "wgpu")]
pub(crate) fn pick(b: Backend) -> (Device, String) {
    use burn::tensor::DeviceKind;
    let kinds: &[(DeviceKind, &str)] = match b {
        Backend::Cpu => return cpu(""),
        Backend::Auto => &[
            (DeviceKind::DiscreteGpu(0), "discrete GPU"),
            (DeviceKind::IntegratedGpu(0), "integrated GPU"),
        ],
        Backend::Wgpu => &[(DeviceKind::DefaultDevice, "default adapter")],
    };
    for (kind, name) in kinds {
        if let Some(d) = probe(kind.clone()) {
            return (d.autodiff(), format!("burn backend: wgpu ({name})"));
        }
    }
    cpu(match b {
        Backend::Wgpu => "; no wgpu adapter answered",
        _ => "; no GPU adapter",
    })
}

/// A device if a tiny computation on it succeeds (burn's wgpu devices are lazy and panic
/// when no adapter exists; the panic is contained and silenced).
#[cfg(feature = "wgpu")]
fn probe(kind: burn::tensor::DeviceKind) -> Option<Device> {
    use burn::prelude::*;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(move || {
        let d = Device::wgpu(kind);
        let t = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &d);
        let s: f32 = (t.clone() * t).sum().into_scalar::<f32>();
        (s == 14.0).then_some(d)
    });
    std::panic::set_hook(hook);
    r.ok().flatten()
}

/// Keeps freed tensor buffers in the process's heap instead of handing them back to the
/// kernel (glibc on Linux; elsewhere nothing): a training step allocates and frees megabyte
/// tensors by the hundred, and glibc's defaults map each anew (page faults on every first
/// touch) and unmap it on free. Measured on resnet20 (batch 64, 2 threads): 12% of the step's
/// CPU time was in the kernel; with these settings 4%, +8% images/s, the same peak RSS
/// (docs/benchmarks.md, "Training speed"). Process-wide, once; skipped when the user set
/// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` (glibc's own variables) themselves.
pub fn tune_allocator() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let user = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if !user {
            set_malloc_thresholds();
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_malloc_thresholds() {
    // SAFETY: mallopt only adjusts allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_malloc_thresholds() {}
