//! Functional collectives against plain sums and copies, for random seeded sizes,
//! line lengths, algorithms and K. Values are small integers so every summation
//! order gives the exact same f32 result and equality can be exact.

use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wafer_core::spec::wse3;
use wafer_sim::collective::{allreduce, broadcast, multicast, reduce, shift, Algorithm};
use wafer_sim::matrix::{chunk, mesh_gemm, mesh_gemv};

fn random_bufs(rng: &mut ChaCha8Rng, p: usize, n: usize) -> Vec<Vec<f32>> {
    (0..p)
        .map(|_| (0..n).map(|_| rng.gen_range(-50..50) as f32).collect())
        .collect()
}

fn plain_sum(bufs: &[Vec<f32>]) -> Vec<f32> {
    let mut s = vec![0.0; bufs[0].len()];
    for b in bufs {
        for (x, y) in s.iter_mut().zip(b) {
            *x += y;
        }
    }
    s
}

fn random_alg(rng: &mut ChaCha8Rng, p: usize) -> Algorithm {
    match rng.gen_range(0..4) {
        0 => Algorithm::Chain,
        1 => Algorithm::Ring,
        2 => Algorithm::KTree {
            k: rng.gen_range(1..5),
            groups: None,
        },
        _ => Algorithm::KTree {
            k: 2,
            groups: Some(rng.gen_range(1..=p as u32)),
        },
    }
}

#[test]
fn reduce_and_allreduce_equal_the_plain_sum() {
    for seed in 0..300u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let p = rng.gen_range(1..40);
        let n = rng.gen_range(1..20);
        let alg = random_alg(&mut rng, p);
        let bufs = random_bufs(&mut rng, p, n);
        let expect = plain_sum(&bufs);

        let mut r = bufs.clone();
        reduce(&mut r, alg).unwrap();
        assert_eq!(r[0], expect, "reduce seed {seed}: p={p} n={n} {alg:?}");

        let mut a = bufs.clone();
        allreduce(&mut a, alg).unwrap();
        for (i, b) in a.iter().enumerate() {
            assert_eq!(
                *b, expect,
                "allreduce seed {seed}: PE {i} of p={p} n={n} {alg:?}"
            );
        }
    }
}

#[test]
fn broadcast_multicast_and_shift_move_values_exactly() {
    for seed in 0..100u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (w, h) = (rng.gen_range(1..9), rng.gen_range(1..9));
        let n = rng.gen_range(1..6);
        let bufs = random_bufs(&mut rng, w * h, n);

        let src = rng.gen_range(0..w * h);
        let mut b = bufs.clone();
        broadcast(&mut b, src).unwrap();
        assert!(b.iter().all(|x| *x == bufs[src]), "broadcast seed {seed}");

        let along_rows = rng.gen_bool(0.5);
        let s = rng.gen_range(0..if along_rows { w } else { h });
        let mut m = bufs.clone();
        multicast(&mut m, w, h, along_rows, s).unwrap();
        for y in 0..h {
            for x in 0..w {
                let from = if along_rows { y * w + s } else { s * w + x };
                assert_eq!(
                    m[y * w + x],
                    bufs[from],
                    "multicast seed {seed} at ({x},{y})"
                );
            }
        }

        let steps = rng.gen_range(0..3 * w);
        let mut line = bufs[..w].to_vec();
        shift(&mut line, steps).unwrap();
        for (i, v) in line.iter().enumerate() {
            assert_eq!(*v, bufs[(i + w * 3 - steps) % w], "shift seed {seed}");
        }
    }
}

#[test]
fn mesh_gemv_and_gemm_equal_plain_products() {
    let spec = wse3();
    for seed in 0..40u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (m, n) = (rng.gen_range(1..24), rng.gen_range(1..24));
        let (width, height) = (rng.gen_range(1..=n.min(6)), rng.gen_range(1..=m.min(6)));
        let x: Vec<f32> = (0..m).map(|_| rng.gen_range(-4..4) as f32).collect();
        let w: Vec<f16> = (0..m * n)
            .map(|_| f16::from_f32(rng.gen_range(-4..4) as f32))
            .collect();
        let alg = random_alg(&mut rng, height);
        let out = mesh_gemv(&spec, width, height, &x, &w, n, alg).unwrap();
        let y: Vec<f32> = (0..n)
            .map(|j| (0..m).map(|i| x[i] * w[i * n + j].to_f32()).sum())
            .collect();
        for r in 0..height {
            for c in 0..width {
                assert_eq!(
                    out[r * width + c],
                    y[chunk(c, n, width)],
                    "gemv seed {seed} PE ({c},{r})"
                );
            }
        }

        let p = rng.gen_range(1..5);
        let (gm, gk, gn) = (
            rng.gen_range(p..12),
            rng.gen_range(p..12),
            rng.gen_range(p..12),
        );
        let a: Vec<f32> = (0..gm * gk).map(|_| rng.gen_range(-4..4) as f32).collect();
        let b: Vec<f16> = (0..gk * gn)
            .map(|_| f16::from_f32(rng.gen_range(-4..4) as f32))
            .collect();
        let c = mesh_gemm(&spec, p, &a, &b, gm, gk, gn).unwrap();
        for i in 0..gm {
            for j in 0..gn {
                let e: f32 = (0..gk)
                    .map(|l| a[i * gk + l] * b[l * gn + j].to_f32())
                    .sum();
                assert_eq!(
                    c[i * gn + j],
                    e,
                    "gemm seed {seed} p={p} [{gm},{gk},{gn}] at ({i},{j})"
                );
            }
        }
    }
}
