//! What an op's burn forward sees while it runs ([`Fx`]): its node, attributes, inputs on the
//! device (float constants uploaded once and cached), and the running-statistics updates.

use super::*;

/// What an op sees while it runs.
pub struct Fx<'a> {
    pub node: &'a Node,
    pub id: NodeId,
    pub opset: i64,
    pub train: bool,
    /// Apply ONNX's Relu to the output (the op said it can, [`super::ops::BurnOp::fuses_relu`],
    /// and the Relu that consumed it is skipped).
    pub relu: bool,
    pub device: &'a Device,
    /// New running statistics: (input slot, value), applied after the pass in training mode.
    pub updates: RefCell<Vec<(usize, Dt)>>,
    pub(super) uploads: &'a Uploads,
}

/// The model's float constants on the device, uploaded on first use as a device operand and
/// kept for later passes (keyed by the constant's `Arc`, which the network holds for its life;
/// host values computed during a pass are never cached).
#[derive(Default)]
pub(super) struct Uploads {
    pub(super) constants: std::collections::HashSet<usize>,
    pub(super) cache: RefCell<HashMap<usize, Dt>>,
}

impl Uploads {
    fn get(&self, t: &Arc<IrTensor>, device: &Device) -> ops::OpResult<Dt> {
        let key = Arc::as_ptr(t) as usize;
        if !self.constants.contains(&key) {
            return host_to_dt(t, device);
        }
        if let Some(d) = self.cache.borrow().get(&key) {
            return Ok(d.clone());
        }
        let d = host_to_dt(t, device)?;
        self.cache.borrow_mut().insert(key, d.clone());
        Ok(d)
    }
}

impl Fx<'_> {
    pub fn attr_i(&self, name: &str, default: i64) -> i64 {
        self.node.attr_i(name).unwrap_or(default)
    }
    pub fn attr_f(&self, name: &str, default: f32) -> f32 {
        self.node.attr_f(name).unwrap_or(default)
    }
    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.node.attr_ints(name).map(|v| v.to_vec())
    }
    pub fn attr_s(&self, name: &str, default: &str) -> String {
        self.node.attr_s(name).unwrap_or(default).to_string()
    }
    /// Input `i` as a device tensor (host float constants are uploaded).
    pub fn f(&self, ins: &[Option<Val>], i: usize) -> ops::OpResult<Dt> {
        match ins.get(i).and_then(|v| v.as_ref()) {
            Some(Val::F(d)) => Ok(d.clone()),
            Some(Val::H(t)) => self.uploads.get(t, self.device),
            None => Err(format!("missing input #{i}")),
        }
    }
    /// Optional input `i` as a device tensor.
    pub fn opt_f(&self, ins: &[Option<Val>], i: usize) -> ops::OpResult<Option<Dt>> {
        match ins.get(i).and_then(|v| v.as_ref()) {
            None => Ok(None),
            Some(_) => self.f(ins, i).map(Some),
        }
    }
    /// Optional input `i` as host integers (axes, pads, shapes).
    pub fn ints(&self, ins: &[Option<Val>], i: usize) -> ops::OpResult<Option<Vec<i64>>> {
        match ins.get(i).and_then(|v| v.as_ref()) {
            None => Ok(None),
            Some(Val::H(t)) if t.numel() == 0 => Ok(None),
            Some(Val::H(t)) => t
                .as_i64s()
                .map(Some)
                .ok_or_else(|| format!("input #{i} is not an integer tensor")),
            Some(Val::F(_)) => Err(format!(
                "input #{i} is computed from the image input; only constants are supported there"
            )),
        }
    }
    /// Optional input `i` as host floats (scales, clip bounds).
    pub fn floats(&self, ins: &[Option<Val>], i: usize) -> ops::OpResult<Option<Vec<f32>>> {
        match ins.get(i).and_then(|v| v.as_ref()) {
            None => Ok(None),
            Some(Val::H(t)) if t.numel() == 0 => Ok(None),
            Some(Val::H(t)) => t
                .to_arr()
                .and_then(|a| a.to_f32_vec())
                .map(Some)
                .ok_or_else(|| format!("input #{i} is not a numeric tensor")),
            Some(Val::F(d)) => Ok(Some(d.to_vec())),
        }
    }
}
