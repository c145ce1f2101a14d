//! Ops with a weight: Conv, ConvTranspose, Gemm, MatMul (producers and consumers of channels).

use super::*;

pub(super) fn conv(cx: &mut Cx) -> Result<(), String> {
    let w = cx.input(1).ok_or("no weight")?;
    if !cx.is_const(w) {
        return Err("weight is not constant".into());
    }
    let ws = cx.shape(w).ok_or("weight shape unknown")?;
    let y = out_shape(cx, 0)?;
    let group = cx.node().attr_i("group").unwrap_or(1) as usize;
    let cin = ws[1] as usize * group;
    let cout = ws[0] as usize;
    let ins = input_space(cx, 0, 1, "channels without a producing layer")?;
    let o = cx.output(0).unwrap();
    let outs = cx.ch.new_space(o, 1, y[1] as usize);
    cx.ch.roles.push(Role::Producer {
        node: cx.id,
        space: outs,
    });
    if group == 1 {
        cx.ch.roles.push(Role::Consumer {
            node: cx.id,
            space: ins,
        });
    } else if group == cin && cout.is_multiple_of(cin) {
        // Depthwise (multiplier m): input channel i feeds outputs [i·m, (i+1)·m).
        let m = cout / cin;
        for i in 0..cin {
            for j in 0..m {
                let (a, b) = (cx.ch.slot(ins, i), cx.ch.slot(outs, i * m + j));
                cx.ch.union(a, b);
            }
        }
    } else if group > 0 && cin.is_multiple_of(group) && cout.is_multiple_of(group) {
        // Grouped conv: channels prune freely as long as every group keeps the same number of
        // input channels and of output channels (the rewrite slices each group's columns).
        cx.ch.roles.push(Role::Consumer {
            node: cx.id,
            space: ins,
        });
        cx.ch.equal_parts.push((ins, group));
        cx.ch.equal_parts.push((outs, group));
    } else {
        let why = format!("grouped conv (group {group}) {}", cx.node().label(cx.id));
        cx.ch.block_space(ins, &why);
        cx.ch.block_space(outs, &why);
    }
    Ok(())
}

pub(super) fn conv_transpose(cx: &mut Cx) -> Result<(), String> {
    let w = cx.input(1).ok_or("no weight")?;
    if !cx.is_const(w) {
        return Err("weight is not constant".into());
    }
    let y = out_shape(cx, 0)?;
    let group = cx.node().attr_i("group").unwrap_or(1);
    let ins = input_space(cx, 0, 1, "channels without a producing layer")?;
    let o = cx.output(0).unwrap();
    let outs = cx.ch.new_space(o, 1, y[1] as usize);
    cx.ch.roles.push(Role::Producer {
        node: cx.id,
        space: outs,
    });
    if group == 1 {
        cx.ch.roles.push(Role::Consumer {
            node: cx.id,
            space: ins,
        });
    } else {
        let why = format!("grouped ConvTranspose {}", cx.node().label(cx.id));
        cx.ch.block_space(ins, &why);
        cx.ch.block_space(outs, &why);
    }
    Ok(())
}

pub(super) fn gemm(cx: &mut Cx) -> Result<(), String> {
    let b = cx.input(1).ok_or("no B")?;
    if !cx.is_const(b) || cx.node().attr_i("transA").unwrap_or(0) != 0 {
        return Err("Gemm with non-constant B or transA".into());
    }
    if let Some(c) = cx.input(2) {
        if !cx.is_const(c) {
            return Err("Gemm with non-constant C".into());
        }
    }
    let y = out_shape(cx, 0)?;
    let ins = input_space(cx, 0, 1, "features without a producing layer")?;
    cx.ch.roles.push(Role::Consumer {
        node: cx.id,
        space: ins,
    });
    let o = cx.output(0).unwrap();
    let outs = cx.ch.new_space(o, 1, y[1] as usize);
    cx.ch.roles.push(Role::Producer {
        node: cx.id,
        space: outs,
    });
    Ok(())
}

pub(super) fn matmul(cx: &mut Cx) -> Result<(), String> {
    let b = cx.input(1).ok_or("no B")?;
    let bs = cx.shape(b).ok_or("B shape unknown")?;
    if !cx.is_const(b) || bs.len() != 2 {
        return Err("MatMul with a non-constant or batched B".into());
    }
    let a_shape = cx
        .shape(cx.input(0).ok_or("no A")?)
        .ok_or("A shape unknown")?;
    if a_shape.len() < 2 {
        return Err("MatMul with a 1-D A".into());
    }
    let y = out_shape(cx, 0)?;
    let ins = input_space(
        cx,
        0,
        a_shape.len() - 1,
        "features without a producing layer",
    )?;
    cx.ch.roles.push(Role::Consumer {
        node: cx.id,
        space: ins,
    });
    let o = cx.output(0).unwrap();
    let outs = cx.ch.new_space(o, y.len() - 1, y[y.len() - 1] as usize);
    cx.ch.roles.push(Role::Producer {
        node: cx.id,
        space: outs,
    });
    Ok(())
}
