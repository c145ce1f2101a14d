//! Regenerates the fixture models shipped in `models/` (deterministic):
//! `cargo run --release --example make_fixtures`.
use prost::Message;

fn main() -> std::io::Result<()> {
    let m = onnx_prune::onnx::builder::tiny_resnet(7);
    std::fs::create_dir_all("models")?;
    std::fs::write("models/tiny_resnet.onnx", m.encode_to_vec())?;
    println!("wrote models/tiny_resnet.onnx");
    Ok(())
}
