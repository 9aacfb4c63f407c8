//! A DeepSeek-V3.2 checkpoint's `config.json` (the Hugging Face layout, DeepSeek-V3.2-Exp's field
//! names), checked field by field: a value the code cannot run is an error naming the field, what
//! was found and what is allowed.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// `rope_scaling` (YaRN).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    #[serde(rename = "type")]
    pub kind: String,
    pub factor: f64,
    pub original_max_position_embeddings: u32,
    pub beta_fast: f64,
    pub beta_slow: f64,
    pub mscale: f64,
    pub mscale_all_dim: f64,
}

/// The fields of `config.json` this code reads (others are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HfConfig {
    pub model_type: String,
    pub vocab_size: u32,
    pub hidden_size: u32,
    pub num_hidden_layers: u32,
    pub first_k_dense_replace: u32,
    pub num_attention_heads: u32,
    pub q_lora_rank: u32,
    pub kv_lora_rank: u32,
    pub qk_nope_head_dim: u32,
    pub qk_rope_head_dim: u32,
    pub v_head_dim: u32,
    pub index_n_heads: u32,
    pub index_head_dim: u32,
    pub index_topk: u32,
    pub n_routed_experts: u32,
    pub n_shared_experts: u32,
    pub num_experts_per_tok: u32,
    pub n_group: u32,
    pub topk_group: u32,
    pub routed_scaling_factor: f64,
    pub scoring_func: String,
    pub topk_method: String,
    pub norm_topk_prob: bool,
    pub moe_intermediate_size: u32,
    pub intermediate_size: u32,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: u32,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Multi-token-prediction layers after the last decoder layer (their tensors are skipped).
    #[serde(default)]
    pub num_nextn_predict_layers: u32,
    /// The real checkpoint's `{"quant_method": "fp8", "weight_block_size": [128, 128], …}`.
    #[serde(default)]
    pub quantization_config: Option<serde_json::Value>,
}

fn check(field: &str, ok: bool, value: impl std::fmt::Display, allowed: &str) -> Result<()> {
    match ok {
        true => Ok(()),
        false => Err(Error::config(field, value, allowed)),
    }
}

impl HfConfig {
    /// Parse and check `config.json`'s text (`what` names the file in errors).
    pub fn parse(text: &str, what: &str) -> Result<HfConfig> {
        let cfg: HfConfig = serde_json::from_str(text).map_err(|e| {
            Error::config(
                what,
                format!("line {} column {}: {e}", e.line(), e.column()),
                "a DeepSeek-V3.2 config.json",
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every value the code can run; what the math forbids is refused with the field's name.
    pub fn validate(&self) -> Result<()> {
        let pos = |field: &str, v: u32| check(field, v > 0, v, "> 0");
        check(
            "model_type",
            self.model_type == "deepseek_v32",
            &self.model_type,
            "deepseek_v32",
        )?;
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("q_lora_rank", self.q_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("v_head_dim", self.v_head_dim),
            ("index_n_heads", self.index_n_heads),
            ("index_topk", self.index_topk),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            pos(field, v)?;
        }
        // the kernels' shapes (kernels::indexer, kernels::sparse_mla, reference::fp8)
        crate::config::check(self.kv_lora_rank, "kv_lora_rank", 64, 512, 64)?;
        crate::config::check(self.qk_rope_head_dim, "qk_rope_head_dim", 2, 256, 2)?;
        crate::config::check(self.index_head_dim, "index_head_dim", 16, 512, 16)?;
        check(
            "index_head_dim",
            self.qk_rope_head_dim <= self.index_head_dim,
            self.index_head_dim,
            "≥ qk_rope_head_dim (the indexer ropes its first qk_rope_head_dim dims)",
        )?;
        check(
            "index_head_dim",
            self.index_head_dim.is_power_of_two(),
            self.index_head_dim,
            "a power of two (the Hadamard rotation)",
        )?;
        crate::config::check(self.index_topk, "index_topk", 1, 2048, 1)?;
        check(
            "first_k_dense_replace",
            self.first_k_dense_replace <= self.num_hidden_layers,
            self.first_k_dense_replace,
            "≤ num_hidden_layers",
        )?;
        if self.first_k_dense_replace > 0 {
            pos("intermediate_size", self.intermediate_size)?;
        }
        if self.first_k_dense_replace < self.num_hidden_layers {
            pos("n_routed_experts", self.n_routed_experts)?;
            pos("moe_intermediate_size", self.moe_intermediate_size)?;
            pos("n_group", self.n_group)?;
            check(
                "n_group",
                self.n_routed_experts.is_multiple_of(self.n_group),
                self.n_group,
                "a divisor of n_routed_experts",
            )?;
            check(
                "topk_group",
                (1..=self.n_group).contains(&self.topk_group),
                self.topk_group,
                "1 ..= n_group",
            )?;
            // group scores are the sum of each group's top-2 experts
            check(
                "n_routed_experts",
                self.n_routed_experts / self.n_group >= 2,
                self.n_routed_experts,
                "≥ 2 experts a group (the group score sums its top 2)",
            )?;
            check(
                "num_experts_per_tok",
                (1..=self.topk_group * (self.n_routed_experts / self.n_group))
                    .contains(&self.num_experts_per_tok),
                self.num_experts_per_tok,
                "1 ..= topk_group × experts a group",
            )?;
            check(
                "scoring_func",
                self.scoring_func == "sigmoid",
                &self.scoring_func,
                "sigmoid",
            )?;
            check(
                "topk_method",
                self.topk_method == "noaux_tc",
                &self.topk_method,
                "noaux_tc",
            )?;
        }
        check(
            "rms_norm_eps",
            self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0,
            self.rms_norm_eps,
            "> 0",
        )?;
        check(
            "rope_theta",
            self.rope_theta.is_finite() && self.rope_theta > 1.0,
            self.rope_theta,
            "> 1",
        )?;
        check(
            "routed_scaling_factor",
            self.routed_scaling_factor.is_finite() && self.routed_scaling_factor > 0.0,
            self.routed_scaling_factor,
            "> 0",
        )?;
        if let Some(r) = &self.rope_scaling {
            check("rope_scaling.type", r.kind == "yarn", &r.kind, "yarn")?;
            check(
                "rope_scaling.factor",
                r.factor.is_finite() && r.factor >= 1.0,
                r.factor,
                "≥ 1",
            )?;
            pos(
                "rope_scaling.original_max_position_embeddings",
                r.original_max_position_embeddings,
            )?;
            for (f, v) in [
                ("rope_scaling.beta_fast", r.beta_fast),
                ("rope_scaling.beta_slow", r.beta_slow),
                ("rope_scaling.mscale", r.mscale),
                ("rope_scaling.mscale_all_dim", r.mscale_all_dim),
            ] {
                check(f, v.is_finite() && v >= 0.0, v, "a finite value ≥ 0")?;
            }
        }
        Ok(())
    }

    /// Whether layer `l` is an MoE layer (the first `first_k_dense_replace` are dense).
    pub fn is_moe(&self, l: u32) -> bool {
        l >= self.first_k_dense_replace
    }

    /// Whether YaRN is active: DeepSeek's reference scales only when the positions run past the
    /// original training length (`max_seq_len > original_seq_len`).
    pub fn yarn(&self) -> Option<&RopeScaling> {
        self.rope_scaling
            .as_ref()
            .filter(|r| self.max_position_embeddings > r.original_max_position_embeddings)
    }

    /// MLA's softmax scale: (nope + rope)^-1/2, times mscale² under YaRN, mscale = 0.1 ·
    /// mscale_all_dim · ln(factor) + 1.
    pub fn softmax_scale(&self) -> f64 {
        let base = ((self.qk_nope_head_dim + self.qk_rope_head_dim) as f64).powf(-0.5);
        match self.yarn() {
            Some(r) if r.factor > 1.0 => {
                let m = 0.1 * r.mscale_all_dim * r.factor.ln() + 1.0;
                base * m * m
            }
            _ => base,
        }
    }

    /// RoPE's inverse frequencies (qk_rope_head_dim / 2 of them), YaRN-corrected where YaRN is
    /// active: DeepSeek's `precompute_freqs_cis`, in f64.
    pub fn rope_inv_freqs(&self) -> Vec<f64> {
        let dim = self.qk_rope_head_dim as f64;
        let base = self.rope_theta;
        let half = (self.qk_rope_head_dim / 2) as usize;
        let freqs: Vec<f64> = (0..half)
            .map(|i| 1.0 / base.powf(2.0 * i as f64 / dim))
            .collect();
        let Some(r) = self.yarn() else {
            return freqs;
        };
        let orig = r.original_max_position_embeddings as f64;
        let correction_dim = |rotations: f64| {
            dim * (orig / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
        };
        let low = correction_dim(r.beta_fast).floor().max(0.0);
        let high = correction_dim(r.beta_slow).ceil().min(dim - 1.0);
        let high = if low == high { high + 0.001 } else { high };
        freqs
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                let smooth = 1.0 - ramp;
                f / r.factor * (1.0 - smooth) + f * smooth
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HfConfig {
        crate::model::init::preset("tiny").unwrap()
    }

    #[test]
    fn softmax_scale_and_yarn_follow_the_reference() {
        let mut c = base();
        c.qk_nope_head_dim = 128;
        c.qk_rope_head_dim = 64;
        c.max_position_embeddings = 163_840;
        c.rope_theta = 10_000.0;
        c.rope_scaling = Some(RopeScaling {
            kind: "yarn".into(),
            factor: 40.0,
            original_max_position_embeddings: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 1.0,
        });
        // 192^-1/2 · (0.1 · ln 40 + 1)^2
        let m = 0.1 * 40f64.ln() + 1.0;
        assert!((c.softmax_scale() - m * m / 192f64.sqrt()).abs() < 1e-15);
        let f = c.rope_inv_freqs();
        assert_eq!(f.len(), 32);
        // the fastest dims keep their frequency, the slowest are divided by the factor
        assert_eq!(f[0], 1.0);
        let plain = 1.0 / 10_000f64.powf(62.0 / 64.0);
        assert!((f[31] - plain / 40.0).abs() < 1e-18);
        // without YaRN (positions within the original length): plain RoPE, scale 192^-1/2
        c.max_position_embeddings = 4096;
        assert_eq!(c.rope_inv_freqs()[31], plain);
        assert!((c.softmax_scale() - 1.0 / 192f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn bad_values_name_their_field() {
        type Edit = Box<dyn Fn(&mut HfConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("model_type", Box::new(|c| c.model_type = "llama".into())),
            ("kv_lora_rank", Box::new(|c| c.kv_lora_rank = 100)),
            ("index_head_dim", Box::new(|c| c.index_head_dim = 96)),
            ("n_group", Box::new(|c| c.n_group = 3)),
            ("topk_group", Box::new(|c| c.topk_group = 0)),
            (
                "scoring_func",
                Box::new(|c| c.scoring_func = "softmax".into()),
            ),
            (
                "num_experts_per_tok",
                Box::new(|c| c.num_experts_per_tok = 99),
            ),
            ("rms_norm_eps", Box::new(|c| c.rms_norm_eps = f64::NAN)),
        ];
        for (field, bad) in cases {
            let mut c = base();
            bad(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        let e = HfConfig::parse("{\"model_type\": 3}", "config.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json") && e.contains("line 1"), "{e}");
    }
}
