//! Learning on burn: the search agents. Weights are initialised from our own seeded RNG, so a
//! seed gives the same agent on every run (on one backend).
//!
//! Backend, chosen at run time (one line says which): burn's CPU backend `flex`, or — in a
//! build with the `wgpu` feature — burn-wgpu. `auto` takes a GPU adapter (discrete, then
//! integrated) when one answers and `flex` otherwise; a CPU Vulkan driver (lavapipe) is used
//! only when asked for (`wgpu`), since for networks this small it is slower than `flex`.

pub mod ddpg;
pub mod dqn;
pub mod net;
pub mod nets;
pub mod reinforce;
pub mod train;

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
fn pick(b: Backend) -> (Device, String) {
    match b {
        Backend::Wgpu => cpu("; this build has no wgpu (rebuild with --features wgpu)"),
        _ => cpu(""),
    }
}

#[cfg(feature = "wgpu")]
fn pick(b: Backend) -> (Device, String) {
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

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;

    use crate::testkit::skip;

    /// The wgpu device, or `None` with a recorded skip when no adapter answers; with
    /// `ONNX_PRUNE_REQUIRE_VULKAN=1` (set by CI, which installs lavapipe) that is a failure.
    fn wgpu_or_skip() -> Option<(Device, String)> {
        let (device, line) = pick(Backend::Wgpu);
        if line.contains("wgpu (") {
            return Some((device, line));
        }
        let why = format!("{line} (install mesa-vulkan-drivers for a CPU Vulkan adapter)");
        if std::env::var("ONNX_PRUNE_REQUIRE_VULKAN").as_deref() == Ok("1") {
            panic!("a Vulkan adapter is required (ONNX_PRUNE_REQUIRE_VULKAN=1): {why}");
        }
        skip(&why);
        None
    }

    /// The agents' code path on burn-wgpu (here: a CPU Vulkan driver; the GPU path is the
    /// same code): the DQN toy learns there too.
    #[test]
    fn dqn_learns_on_wgpu() {
        let Some((device, line)) = wgpu_or_skip() else {
            return;
        };
        eprintln!("{line}");
        let (before, after, _) = dqn::tests::chain_toy(&device);
        eprintln!("dqn toy on wgpu: {before}/4 -> {after}/4 greedy actions right");
        assert_eq!(after, 4);
    }

    /// The IR network on burn-wgpu: forward matches `flex` on the shipped tiny ResNet (BN,
    /// residuals, computed pads), and fine-tuning steps run there with a falling loss.
    #[test]
    fn net_runs_and_trains_on_wgpu() {
        use crate::learn::net::{Dt, Net};
        use burn::prelude::*;
        let Some((device, line)) = wgpu_or_skip() else {
            return;
        };
        let proto = crate::onnx::builder::tiny_resnet(1);
        let bytes = prost::Message::encode_to_vec(&proto);
        let model = crate::onnx::decode_model(bytes.into(), None).unwrap();
        let x = crate::eval::random_inputs(&[vec![4, 3, 32, 32]], 2)[0]
            .data
            .clone();
        let cpu = Net::new(&model, &Device::flex()).unwrap();
        let gpu = Net::new(&model, &device.clone().inner()).unwrap();
        let a = cpu
            .infer(Dt::from_vec(x.clone(), &[4, 3, 32, 32], &Device::flex()))
            .unwrap();
        let b = gpu
            .infer(Dt::from_vec(
                x.clone(),
                &[4, 3, 32, 32],
                &device.clone().inner(),
            ))
            .unwrap();
        let (va, vb) = (a[0].to_vec(), b[0].to_vec());
        let scale = va.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = va
            .iter()
            .zip(&vb)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()))
            / scale;
        eprintln!("{line}: tiny_resnet forward vs flex, max rel {err:.2e}");
        assert!(err < 1e-4, "{err}");
        // Fine-tuning: 12 steps of cross-entropy on 64 fixed random images (memorisation).
        let data = crate::eval::data::Dataset {
            n: 64,
            c: 3,
            h: 32,
            w: 32,
            x: crate::eval::random_inputs(&[vec![64, 3, 32, 32]], 3)[0]
                .data
                .clone(),
            y: Some((0..64).map(|i| i % 10).collect()),
            classes: None,
        };
        let mut net = Net::new(&model, &device).unwrap();
        let o = crate::learn::train::TrainOptions {
            optim: crate::learn::train::Optim::parse("adam").unwrap(),
            lr: 1e-2,
            batch: 16,
            steps: 12,
            augment: false,
            ..Default::default()
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let rep = crate::learn::train::Trainer::new(&net, o)
            .run(
                &mut net,
                None,
                &data,
                &stop,
                &mut |_| {},
                &mut |_, _| Ok(()),
            )
            .unwrap();
        eprintln!(
            "wgpu fine-tuning: loss {} -> {}",
            rep.loss_first, rep.loss_last
        );
        assert!(rep.loss_last < rep.loss_first, "{rep:?}");
    }
}
