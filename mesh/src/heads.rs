//! Where each query, key and value dimension sits on a layer's region.
//!
//! The cost plan's decode layout (`models::cost`, after WaferLLM): KV dims are
//! split over the region's columns, and each column also holds the query dims of
//! the `g` query heads that share its KV head, at the same head-dim indices —
//! grouped-query sharing without copies. Within each head the dims are stored
//! pair-interleaved (`j, j + head_dim/2, j+1, ...`) so both halves of a RoPE
//! rotation sit side by side on one PE (an even `kv_c` keeps every pair on one
//! column). Permuting Q and K the same way leaves every score unchanged; V uses the
//! same order so the attention output lands in the query order, and the O
//! projection's input columns are permuted to match.

use wafer_kernels::vector::rotate;

/// The permutations of one model's heads.
#[derive(Debug, Clone)]
pub struct HeadOrder {
    pub head_dim: usize,
    pub kv_heads: usize,
    /// Query heads per KV head.
    pub group: usize,
    /// Stored KV position -> original KV index (`kv_dim` entries).
    pub kv: Vec<usize>,
    /// Stored query position (`e * group + m`) -> original query index.
    pub q: Vec<usize>,
}

impl HeadOrder {
    pub fn new(head_dim: usize, kv_heads: usize, group: usize) -> HeadOrder {
        let half = head_dim / 2;
        let kv: Vec<usize> = (0..kv_heads * head_dim)
            .map(|p| {
                let (gk, local) = (p / head_dim, p % head_dim);
                gk * head_dim + local / 2 + (local % 2) * half
            })
            .collect();
        let mut q = Vec::with_capacity(kv.len() * group);
        for &orig in &kv {
            let (gk, dd) = (orig / head_dim, orig % head_dim);
            for m in 0..group {
                q.push((gk * group + m) * head_dim + dd);
            }
        }
        HeadOrder {
            head_dim,
            kv_heads,
            group,
            kv,
            q,
        }
    }

    /// Rotates stored keys (`kv_dim`, pair-interleaved) by the position's angles.
    pub fn rope_k(&self, k: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = self.head_dim / 2;
        for head in k.chunks_exact_mut(self.head_dim) {
            for (j, pair) in head.chunks_exact_mut(2).enumerate().take(half) {
                let (a, b) = pair.split_at_mut(1);
                rotate(a, b, cos[j], sin[j]);
            }
        }
    }

    /// Rotates stored queries (`e * group + m` order).
    pub fn rope_q(&self, q: &mut [f32], cos: &[f32], sin: &[f32]) {
        let g = self.group;
        // Each KV pair (e, e + 1) carries `g` query pairs, `g` apart.
        for (pair_index, block) in q.chunks_exact_mut(2 * g).enumerate() {
            let j = pair_index % (self.head_dim / 2);
            let (a, b) = block.split_at_mut(g);
            rotate(a, b, cos[j], sin[j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_and_pair_rope_halves() {
        let o = HeadOrder::new(4, 2, 3);
        // Head 0 stored as dims 0, 2, 1, 3; head 1 likewise.
        assert_eq!(o.kv, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        // Stored e = 1 is KV dim 2 of head 0: query heads 0, 1, 2 at dim 2.
        assert_eq!(&o.q[3..6], &[2, 6, 10]);
        let mut seen = o.q.clone();
        seen.sort();
        assert_eq!(seen, (0..24).collect::<Vec<_>>());
    }

    #[test]
    fn rope_in_stored_order_equals_rotate_half_in_original_order() {
        let (hd, kvh, g) = (8, 2, 2);
        let o = HeadOrder::new(hd, kvh, g);
        let cos = [0.3, -0.5, 0.9, 0.1];
        let sin = [0.95, 0.86, -0.43, 0.99];
        let orig: Vec<f32> = (0..kvh * g * hd).map(|i| i as f32 * 0.37 - 3.0).collect();
        // Hugging Face rotate_half per head.
        let mut want = orig.clone();
        for head in want.chunks_exact_mut(hd) {
            let (a, b) = head.split_at_mut(hd / 2);
            for i in 0..hd / 2 {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
        let mut stored: Vec<f32> = o.q.iter().map(|&i| orig[i]).collect();
        o.rope_q(&mut stored, &cos, &sin);
        for (p, &i) in o.q.iter().enumerate() {
            assert_eq!(stored[p], want[i], "query stored {p} = original {i}");
        }
        let korig = &orig[..kvh * hd];
        let mut kwant = korig.to_vec();
        for head in kwant.chunks_exact_mut(hd) {
            let (a, b) = head.split_at_mut(hd / 2);
            for i in 0..hd / 2 {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
        let mut ks: Vec<f32> = o.kv.iter().map(|&i| korig[i]).collect();
        o.rope_k(&mut ks, &cos, &sin);
        for (p, &i) in o.kv.iter().enumerate() {
            assert_eq!(ks[p], kwant[i]);
        }
    }
}
