//! Oracle tests: every search path against a naive float64 brute force.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use super::{fused, int8};

fn naive(refs: &[f32], qs: &[f32], d: usize, k: usize, skip: &[Option<u32>]) -> Vec<Vec<u32>> {
    qs.chunks_exact(d)
        .enumerate()
        .map(|(i, q)| {
            let mut all: Vec<(f64, u32)> = refs
                .chunks_exact(d)
                .enumerate()
                .filter(|(j, _)| skip[i] != Some(*j as u32))
                .map(|(j, r)| (q.iter().zip(r).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>(), j as u32))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            all[..k].iter().map(|p| p.1).collect()
        })
        .collect()
}

/// Points near a low-dimensional subspace, offset far from the origin: the float32 expansion
/// alone loses most of its digits here.
fn far_cloud(rng: &mut ChaCha8Rng, n: usize, d: usize, offset: f32, spread: f32) -> Vec<f32> {
    let basis: Vec<f32> = (0..3 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    (0..n)
        .flat_map(|_| {
            let c: [f32; 3] = std::array::from_fn(|_| rng.random_range(-spread..spread));
            let noise: Vec<f32> = (0..d).map(|_| rng.random_range(-1e-3..1e-3)).collect();
            let basis = &basis;
            (0..d).map(move |p| offset + c[0] * basis[p] + c[1] * basis[d + p] + c[2] * basis[2 * d + p] + noise[p]).collect::<Vec<_>>()
        })
        .collect()
}

fn check(strategy: SearchStrategy, n: usize, nq: usize, d: usize, k: usize, offset: f32, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let refs = far_cloud(&mut rng, n, d, offset, 0.5);
    let qs: Vec<f32> = refs[..nq * d].to_vec();
    let skip: Vec<Option<u32>> = (0..nq as u32).map(|i| if i % 3 == 0 { None } else { Some(i) }).collect();
    let index = KnnIndex::new(Rows::try_new(&refs, n, d).unwrap(), strategy).unwrap();
    let (nb, stats) = index.knn(Rows::try_new(&qs, nq, d).unwrap(), k, Some(&skip)).unwrap();
    let want = naive(&refs, &qs, d, k, &skip);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(nb.indices_of(i), w.as_slice(), "query {i} ({strategy:?}, n={n}, d={d}, k={k})");
        assert!(nb.distances_of(i).windows(2).all(|p| p[0] <= p[1]));
    }
    assert!(stats.refined >= (nq * k) as u64);
}

#[test]
fn gemm_path_matches_oracle() {
    for &(n, d, k) in &[(17, 3, 16), (300, 17, 7), (2049 + 13, 385, 33), (130, 5, 128)] {
        check(SearchStrategy::Gemm, n, n.min(150), d, k, 0.0, n as u64);
        check(SearchStrategy::Gemm, n, n.min(150), d, k, 100.0, n as u64 + 1);
    }
}

#[test]
fn kdtree_path_matches_oracle() {
    for &d in &[2usize, 3, 8, 32] {
        check(SearchStrategy::KdTree, 700, 200, d, 20, 0.0, d as u64);
        check(SearchStrategy::KdTree, 700, 200, d, 20, 50.0, d as u64 + 7);
    }
}

#[test]
fn ties_go_to_the_lower_row() {
    // Four reference points at distance 1 from the query, and one farther.
    let refs = [1.0f32, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0, 3.0, 3.0];
    let q = [0.0f32, 0.0];
    for s in [SearchStrategy::Gemm, SearchStrategy::KdTree] {
        let index = KnnIndex::new(Rows::from_flat(&refs, 2).unwrap(), s).unwrap();
        let (nb, _) = index.knn(Rows::from_flat(&q, 2).unwrap(), 3, None).unwrap();
        assert_eq!(nb.indices_of(0), &[0, 1, 2], "{s:?}");
    }
}

#[test]
fn too_few_rows_and_bad_shapes() {
    let refs = vec![0.0f32; 3 * 4];
    let index = KnnIndex::new(Rows::from_flat(&refs, 4).unwrap(), SearchStrategy::Gemm).unwrap();
    let q = vec![0.0f32; 4];
    let qr = Rows::from_flat(&q, 4).unwrap();
    assert!(index.knn(qr, 3, None).is_ok());
    assert!(matches!(index.knn(qr, 3, Some(&[Some(0)])), Err(KernelError::TooFewPoints { n: 3, k: 3, needed: 4 })));
    let q3 = vec![0.0f32; 3];
    assert!(matches!(index.knn(Rows::from_flat(&q3, 3).unwrap(), 1, None), Err(KernelError::Shape { .. })));
}

#[test]
fn same_answer_on_one_and_two_threads() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (n, d) = (1500, 96);
    let refs = far_cloud(&mut rng, n, d, 20.0, 1.0);
    let run = |threads, strategy| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
            let index = KnnIndex::new(Rows::try_new(&refs, n, d).unwrap(), strategy).unwrap();
            let cfg = crate::LidConfig { k: 24, ..Default::default() };
            crate::pointwise_lid(&index, index.rows(), &cfg, None).unwrap().0
        })
    };
    let one = run(1, SearchStrategy::Gemm);
    assert_eq!(one, run(2, SearchStrategy::Gemm));
    if int8_search_available(d) {
        assert_eq!(one, run(1, SearchStrategy::Int8));
        assert_eq!(one, run(2, SearchStrategy::Int8));
        assert_eq!(one, run(1, SearchStrategy::Int16));
        assert_eq!(one, run(2, SearchStrategy::Int16));
        assert_eq!(one, run(1, SearchStrategy::Int8Fine));
        assert_eq!(one, run(2, SearchStrategy::Int8Fine));
    }
}

#[test]
fn self_join_equals_excluding_queries() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for &(n, d, k) in &[(1300usize, 40usize, 17usize), (520, 97, 64), (40, 8, 5)] {
        let refs = far_cloud(&mut rng, n, d, 30.0, 1.0);
        let index = KnnIndex::new(Rows::try_new(&refs, n, d).unwrap(), SearchStrategy::Gemm).unwrap();
        let me: Vec<Option<u32>> = (0..n as u32).map(Some).collect();
        let (a, _) = index.knn(index.rows(), k, Some(&me)).unwrap();
        let (b, _) = index.self_knn(k).unwrap();
        assert_eq!(a, b, "n={n} d={d} k={k}");
    }
}

/// `e` (from [`KnnIndex::knn_for_estimates`]) holds the same neighbourhoods as `a` (from
/// [`KnnIndex::knn`]): the same members, the same nearest two and k-th rows with the same
/// distance bits, and NaN between them (for `k >= 3`).
fn assert_same_ends(a: &Neighbours, e: &Neighbours, what: &str) {
    let k = a.k;
    assert_eq!((e.k, e.len()), (k, a.len()), "{what}");
    if k < 3 {
        assert_eq!(e, a, "{what}");
        return;
    }
    for i in 0..a.len() {
        let (ai, ei, ad, ed) = (a.indices_of(i), e.indices_of(i), a.distances_of(i), e.distances_of(i));
        for j in [0, 1, k - 1] {
            assert_eq!((ei[j], ed[j].to_bits()), (ai[j], ad[j].to_bits()), "{what}: query {i}, position {j}");
        }
        let (mut am, mut em) = (ai.to_vec(), ei.to_vec());
        am.sort_unstable();
        em.sort_unstable();
        assert_eq!(em, am, "{what}: query {i}, members");
        assert!(ed[2..k - 1].iter().all(|d| d.is_nan()), "{what}: query {i}, distances between the ends");
    }
}

#[test]
fn every_product_path_gives_the_same_neighbours_to_the_bit() {
    let paths: Vec<Products> = [Products::Gemm, Products::Float32Tile, Products::Int8, Products::Int16, Products::Int8Fine]
        .into_iter()
        .filter(|p| match p {
            Products::Gemm => true,
            Products::Float32Tile => fused::available(),
            Products::Int8 | Products::Int16 | Products::Int8Fine | Products::Int8IfItPays => int8::available(),
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    // Sizes off every panel and block boundary, small and wide dimensions, duplicates, a cloud
    // far from the origin, rows with one huge coordinate (coarse int8 scales); the self-join
    // spans several blocks of every kind.
    let cases = [
        (1100usize, 700usize, 385usize, 33usize, 100.0f32, false),
        (47, 30, 3, 5, 0.0, false),
        (2000, 9, 64, 128, 5.0, false),
        (1500, 1500, 17, 7, 0.0, false),
        (1000, 300, 130, 20, 0.0, true),
    ];
    for &(n, nq, d, k, offset, spikes) in &cases {
        let mut refs = far_cloud(&mut rng, n, d, offset, 1.0);
        refs.copy_within(0..d, 5 * d);
        if spikes {
            for i in (0..n).step_by(7) {
                refs[i * d + i % d] += 50.0;
            }
        }
        let qs = refs[..nq * d].to_vec();
        let skip: Vec<Option<u32>> = (0..nq as u32).map(|i| (i % 2 == 0).then_some(i)).collect();
        let rows = Rows::try_new(&refs, n, d).unwrap();
        let q = Rows::try_new(&qs, nq, d).unwrap();
        let want = naive(&refs, &qs, d, k, &skip).concat();
        let mut answers = Vec::new();
        for &p in &paths {
            let index = KnnIndex::build(rows, SearchStrategy::Gemm, p).unwrap();
            let (a, full) = index.knn(q, k, Some(&skip)).unwrap();
            assert_eq!(a.indices, want, "knn against the oracle: {p:?} n={n} d={d} k={k}");
            let (e, ends) = index.knn_for_estimates(q, k, Some(&skip)).unwrap();
            assert_same_ends(&a, &e, &format!("{p:?} n={n} d={d} k={k}"));
            assert!(ends.refined <= full.refined, "{p:?} n={n} d={d} k={k}: {} exact distances for the ends, {} in full", ends.refined, full.refined);
            let (b, _) = index.self_knn(k).unwrap();
            answers.push((p, a, b));
        }
        for (p, a, b) in &answers[1..] {
            assert_eq!(a, &answers[0].1, "knn: {p:?} against {:?}, n={n} d={d} k={k}", answers[0].0);
            assert_eq!(b, &answers[0].2, "self-join: {p:?} against {:?}, n={n} d={d} k={k}", answers[0].0);
        }
    }
}

/// Neighbourhoods given by index, shuffled, come back as the search found them: the same rows in
/// the same order, the same distances to the bit; bad indices are refused.
#[test]
fn neighbours_from_indices_equal_the_search() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let (n, nq, d, k) = (600, 40, 24, 12);
    let refs = far_cloud(&mut rng, n, d, 30.0, 0.5);
    let qs: Vec<f32> = (0..nq * d).map(|_| rng.random_range(29.0..31.0)).collect();
    let index = KnnIndex::new(Rows::try_new(&refs, n, d).unwrap(), SearchStrategy::Gemm).unwrap();
    let queries = Rows::try_new(&qs, nq, d).unwrap();
    let (nb, _) = index.knn(queries, k, None).unwrap();
    let mut shuffled = nb.indices.clone();
    for row in shuffled.chunks_exact_mut(k) {
        row.reverse();
        row.swap(0, k / 2);
    }
    let given = index.neighbours_from_indices(queries, &shuffled, k).unwrap();
    assert_eq!(given.indices, nb.indices);
    assert_eq!(given.distances.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), nb.distances.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    shuffled[5] = n as u32;
    assert!(matches!(index.neighbours_from_indices(queries, &shuffled, k), Err(KernelError::Shape { .. })));
    assert!(matches!(index.neighbours_from_indices(queries, &shuffled[1..], k), Err(KernelError::Shape { .. })));
}
