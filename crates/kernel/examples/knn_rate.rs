//! Quick rate check of the kernel against raw sgemm on the same machine.
//! `cargo run --release -p lidscope-kernel --example knn_rate -- 20000 768 128`
use std::time::Instant;
use lidscope_kernel::*;
use rand::{Rng, SeedableRng};

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (n, d, k) = (a[0], a[1], a[2]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let m = 10;
    let basis: Vec<f32> = (0..m * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let freq: Vec<f32> = (0..m * d).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let mut x = vec![0f32; n * d];
    for i in 0..n {
        let z: Vec<f32> = (0..m).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        for p in 0..d {
            let mut v = 3.0;
            for j in 0..m { v += basis[j * d + p] * (freq[j * d + p] * z[j]).sin(); }
            x[i * d + p] = v + rng.random_range(-0.01f32..0.01);
        }
    }
    // raw sgemm rate: n x n x d in one call with rayon
    let mm = n.min(8192);
    let mut c = vec![0f32; mm * mm];
    let t = Instant::now();
    unsafe { gemm::gemm(mm, mm, d, c.as_mut_ptr(), 1, mm as isize, false, x.as_ptr(), 1, d as isize, x.as_ptr(), d as isize, 1, 0.0, 1.0, false, false, false, gemm::Parallelism::Rayon(0)); }
    let s = t.elapsed().as_secs_f64();
    let rate = 2.0 * (mm * mm * d) as f64 / s / 1e9;
    println!("sgemm {mm}x{mm}x{d}: {s:.3}s {rate:.1} GFLOP/s");
    let rows = Rows::try_new(&x, n, d).unwrap();
    let t = Instant::now();
    let index = KnnIndex::new(rows, SearchStrategy::Gemm).unwrap();
    println!("index {:.3}s", t.elapsed().as_secs_f64());
    let me: Vec<Option<u32>> = (0..n as u32).map(Some).collect();
    let cfg = LidConfig { k, ..LidConfig::default() };
    let (lids, st) = pointwise_lid(&index, rows, &cfg, Some(&me)).unwrap();
    let f1 = 2.0 * (n * n * d) as f64; let f2 = 2.0 * (n * k * k * d) as f64;
    println!("knn {:.3}s ({:.1} GFLOP/s, refined/query {:.1}), estimate {:.3}s ({:.1} GFLOP/s), exact rows {}", st.knn.seconds, f1 / st.knn.seconds / 1e9, st.knn.refined as f64 / n as f64, st.estimate_seconds, f2 / st.estimate_seconds / 1e9, st.exact_rows);
    println!("floor {:.3}s, ratio {:.2}", (f1 + f2) / rate / 1e9, (st.knn.seconds + st.estimate_seconds) / ((f1 + f2) / rate / 1e9));
    println!("mean lid {}", lids.iter().map(|l| l.lid).sum::<f64>() / n as f64);
}
