//! Tensors as the IR stores them: ONNX element type, dims, and little-endian raw bytes.
//!
//! Weights stay in their raw form (a `bytes::Bytes` slice of the file buffer, so loading a model
//! copies no weights); they are decoded into [`Arr`] only when a pass computes with them.

use super::arr::Arr;
use bytes::Bytes;

/// ONNX `TensorProto.DataType`. Kept as the raw code so unknown future types survive a round trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DataType(pub i32);

impl DataType {
    pub const UNDEFINED: Self = Self(0);
    pub const FLOAT: Self = Self(1);
    pub const UINT8: Self = Self(2);
    pub const INT8: Self = Self(3);
    pub const UINT16: Self = Self(4);
    pub const INT16: Self = Self(5);
    pub const INT32: Self = Self(6);
    pub const INT64: Self = Self(7);
    pub const STRING: Self = Self(8);
    pub const BOOL: Self = Self(9);
    pub const FLOAT16: Self = Self(10);
    pub const DOUBLE: Self = Self(11);
    pub const UINT32: Self = Self(12);
    pub const UINT64: Self = Self(13);
    pub const BFLOAT16: Self = Self(16);

    /// Bytes per element in `raw_data`; `None` for strings, sub-byte and unknown types.
    pub fn byte_size(self) -> Option<usize> {
        Some(match self.0 {
            2 | 3 | 9 | 17..=20 | 24 => 1,
            4 | 5 | 10 | 16 => 2,
            1 | 6 | 12 => 4,
            7 | 11 | 13 | 14 => 8,
            15 => 16,
            _ => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self.0, 1 | 10 | 11 | 16..=20 | 23 | 24)
    }

    pub fn name(self) -> String {
        let s = match self.0 {
            0 => "undefined",
            1 => "float32",
            2 => "uint8",
            3 => "int8",
            4 => "uint16",
            5 => "int16",
            6 => "int32",
            7 => "int64",
            8 => "string",
            9 => "bool",
            10 => "float16",
            11 => "float64",
            12 => "uint32",
            13 => "uint64",
            14 => "complex64",
            15 => "complex128",
            16 => "bfloat16",
            n => return format!("dtype#{n}"),
        };
        s.to_string()
    }
}

/// Payload of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Little-endian element bytes, exactly `numel * byte_size` long (checked at load).
    Raw(Bytes),
    /// `string` tensors.
    Strings(Vec<Bytes>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DataType,
    pub dims: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    /// Number of elements (saturating; dims are validated non-negative at load).
    pub fn numel(&self) -> u64 {
        self.dims
            .iter()
            .fold(1u64, |a, &d| a.saturating_mul(d.max(0) as u64))
    }

    pub fn raw(&self) -> Option<&Bytes> {
        match &self.data {
            TensorData::Raw(b) => Some(b),
            TensorData::Strings(_) => None,
        }
    }

    /// Decodes into a typed array; `None` for element types constant evaluation doesn't handle.
    pub fn to_arr(&self) -> Option<Arr> {
        Arr::from_raw(self.dtype, &self.dims, self.raw()?)
    }

    pub fn from_arr(a: &Arr) -> Tensor {
        a.to_tensor()
    }

    /// Values of a small integer tensor (int64/int32/uint8/int8/bool), flattened.
    pub fn as_i64s(&self) -> Option<Vec<i64>> {
        self.to_arr()?.to_i64_vec()
    }

    pub fn as_f32s(&self) -> Option<Vec<f32>> {
        self.to_arr()?.to_f32_vec()
    }

    pub fn f32(dims: &[i64], v: Vec<f32>) -> Tensor {
        let mut b = Vec::with_capacity(v.len() * 4);
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
        Tensor {
            dtype: DataType::FLOAT,
            dims: dims.to_vec(),
            data: TensorData::Raw(b.into()),
        }
    }

    pub fn i64(dims: &[i64], v: Vec<i64>) -> Tensor {
        let mut b = Vec::with_capacity(v.len() * 8);
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
        Tensor {
            dtype: DataType::INT64,
            dims: dims.to_vec(),
            data: TensorData::Raw(b.into()),
        }
    }
}
