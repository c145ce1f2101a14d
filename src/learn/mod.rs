//! Learning on burn: the search agents and fine-tuning. Weights are initialised from our own
//! seeded RNG, so a seed gives the same agent on every run (on one backend). The device they
//! train on is [`crate::net::device`]; the IR as a burn network is [`crate::net`].

pub mod ddpg;
pub mod dqn;
pub mod joint;
pub mod nets;
pub mod reinforce;
pub mod train;

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::dqn;
    use crate::net::device::{pick, Backend};
    use burn::prelude::Device;

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
        use crate::net::{Dt, Net};
        use burn::prelude::*;
        let Some((device, line)) = wgpu_or_skip() else {
            return;
        };
        let proto = crate::onnx::builder::tiny_resnet(1);
        let bytes = prost::Message::encode_to_vec(&proto);
        let model = crate::onnx::decode_model(bytes.into(), None).unwrap();
        let x = crate::data::random_inputs(&[vec![4, 3, 32, 32]], 2)[0]
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
        let data = crate::data::Dataset {
            n: 64,
            c: 3,
            h: 32,
            w: 32,
            x: crate::data::random_inputs(&[vec![64, 3, 32, 32]], 3)[0]
                .data
                .clone(),
            y: Some((0..64).map(|i| i % 10).collect()),
            classes: None,
        };
        let mut net = Net::new(&model, &device).unwrap();
        let o = crate::learn::train::TrainOptions {
            optim: crate::learn::train::Optim::ADAM,
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
