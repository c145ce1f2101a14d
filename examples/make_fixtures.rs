//! Regenerates the fixture models shipped in `models/`:
//! `cargo run --release --example make_fixtures`.
//! - `models/tiny_resnet.onnx`: random weights (deterministic), for data-free and surgery tests.
//! - `models/digits_cnn.onnx`: the digits CNN of `onnx::builder::digits_cnn`, trained by this
//!   project's own trainer on `fixtures/digits_train.npz` (made by
//!   `python3 tools/make_digits_fixture.py`): SGD with Nesterov momentum, lr 0.05, cosine with
//!   5% warm-up, 1,200 steps of 64 (about 59 epochs), no augmentation, seed 0, on burn `flex`.
use onnx_prune::data::{self, DataOptions};
use onnx_prune::learn::train::{finetune, TrainOptions};
use prost::Message;
use std::path::Path;
use std::sync::atomic::AtomicBool;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let m = onnx_prune::onnx::builder::tiny_resnet(7);
    std::fs::create_dir_all("models")?;
    std::fs::write("models/tiny_resnet.onnx", m.encode_to_vec())?;
    println!("wrote models/tiny_resnet.onnx");

    let train = Path::new("fixtures/digits_train.npz");
    if !train.exists() {
        return Err(
            "fixtures/digits_train.npz is missing: run python3 tools/make_digits_fixture.py".into(),
        );
    }
    let data = data::load(train, (1, 8, 8), &DataOptions::default())?;
    let proto = onnx_prune::onnx::builder::digits_cnn(11);
    let model = onnx_prune::onnx::decode_model(proto.encode_to_vec().into(), None)?;
    let steps = 1200;
    let o = TrainOptions {
        lr: 0.05,
        steps,
        warmup: steps / 20,
        augment: false,
        seed: 0,
        ..Default::default()
    };
    let stop = AtomicBool::new(false);
    let ft = finetune(&model, None, &data, &o, None, false, &stop, None, None)?;
    let out = Path::new("models/digits_cnn.onnx");
    onnx_prune::onnx::save(&ft.model, out, &Default::default(), &[])?;
    println!(
        "wrote {} ({} steps, loss {:.3} -> {:.3})",
        out.display(),
        ft.report.steps_done,
        ft.report.loss_first,
        ft.report.loss_last
    );
    Ok(())
}
