//! Analyses over the IR: shape inference with constant propagation (`shapes`) and the cost
//! model (`cost`).

pub mod channels;
pub mod cost;
pub mod shapes;

pub use cost::{cost, CostReport};
pub use shapes::{infer, parse_input_shape, Analysis, ShapeMode};
