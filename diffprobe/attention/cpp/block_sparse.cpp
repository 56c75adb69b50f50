// Block-sparse attention on the CPU: for each (batch, head, query tile), the scores of only its kept key blocks
// (BLAS sgemm, one call per run of consecutive kept blocks), in chunks of about 512 keys with an online softmax
// (ATen's vectorized exp), P·V chunk by chunk into a row accumulator, tiles over torch's threads. A tile is one query
// block, or up to 256 rows of consecutive query blocks that keep the same key blocks (larger GEMMs). fp32
// throughout; the Python side converts other dtypes. Built on first use with the machine's g++
// (torch.utils.cpp_extension, a library of torch operators), for the CPU capability torch reports (AVX2 / AVX512),
// with -fopenmp: at::parallel_for is an OpenMP pragma in ATen's header, and without the flag the whole kernel runs
// on one thread.
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);

using Vec = at::vec::Vectorized<float>;
constexpr int64_t KV_CHUNK = 512;  // key columns per online-softmax step (ATen's CPU flash attention uses 512)
constexpr int64_t Q_TILE = 256;    // query rows per tile at most (ATen's CPU flash attention: 256 from 768 tokens)

// q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv): contiguous fp32. counts (Bm, Hm, QB) and order (Bm, Hm, QB, KB):
// int32, the number of kept key blocks of each query block and their indices first (ascending); Bm / Hm are 1 or
// B / H (broadcast). Returns (B, H, N, dv); a query block with no kept key block is zeros.
at::Tensor block_sparse_forward(at::Tensor q, at::Tensor k, at::Tensor v, at::Tensor counts, at::Tensor order,
                                int64_t bs, double scale_d) {
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3);
  const int64_t M = k.size(2), DV = v.size(3);
  const int64_t QB = (N + bs - 1) / bs, KB = (M + bs - 1) / bs;
  const int64_t Bm = counts.size(0), Hm = counts.size(1);
  auto out = at::zeros({B, H, N, DV}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const int32_t* cp = counts.data_ptr<int32_t>();
  const int32_t* op = order.data_ptr<int32_t>();
  float* outp = out.data_ptr<float>();
  const float scale = static_cast<float>(scale_d);
  const float neg_inf = -std::numeric_limits<float>::infinity();

  // query tiles: consecutive query blocks of one mask row that keep the same key blocks run as one tile of up to
  // Q_TILE rows (larger GEMMs; every block kept gives whole tiles), others alone
  const int64_t per_tile = std::max<int64_t>(1, Q_TILE / bs);
  std::vector<std::vector<int64_t>> tiles(Bm * Hm);  // per mask row: first query block of each tile, then QB
  for (int64_t r = 0; r < Bm * Hm; ++r) {
    const int32_t* c = cp + r * QB;
    const int32_t* o = op + r * QB * KB;
    for (int64_t qi = 0; qi < QB;) {
      tiles[r].push_back(qi);
      int64_t qj = qi + 1;
      while (qj < QB && qj - qi < per_tile && c[qj] == c[qi] &&
             std::equal(o + qj * KB, o + qj * KB + c[qj], o + qi * KB))
        ++qj;
      qi = qj;
    }
    tiles[r].push_back(QB);
  }
  std::vector<int64_t> item_bh, item_tile;  // work items: (batch × head, tile index in its mask row)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const int64_t r = (Bm == 1 ? 0 : bh / H) * Hm + (Hm == 1 ? 0 : bh % H);
    for (size_t t = 0; t + 1 < tiles[r].size(); ++t) {
      item_bh.push_back(bh);
      item_tile.push_back(static_cast<int64_t>(t));
    }
  }
  const int64_t rows_max = per_tile * bs;

  at::parallel_for(0, static_cast<int64_t>(item_bh.size()), 1, [&](int64_t begin, int64_t end) {
    // per tile, its kept keys in chunks of about KV_CHUNK columns: the scores of a chunk (one GEMM per run of
    // consecutive kept key blocks inside it), an online-softmax update (one rescale per chunk), then P·V of the
    // chunk into the row accumulator; the chunk stays in cache
    std::vector<float> s(rows_max * std::min<int64_t>(M, KV_CHUNK + bs)), acc(rows_max * DV), row_max(rows_max),
        row_sum(rows_max);
    std::vector<int64_t> run_start, run_len, run_col;
    for (int64_t w = begin; w < end; ++w) {
      const int64_t bh = item_bh[w], bi = bh / H, hi = bh % H;
      const int64_t mb = Bm == 1 ? 0 : bi, mh = Hm == 1 ? 0 : hi;
      const std::vector<int64_t>& row_tiles = tiles[mb * Hm + mh];
      const int64_t qi = row_tiles[item_tile[w]], qend = row_tiles[item_tile[w] + 1];
      const int64_t mask_row = (mb * Hm + mh) * QB + qi;
      const int32_t kept = cp[mask_row];
      if (kept == 0) continue;
      const int32_t* blocks = op + mask_row * KB;
      const int64_t r0 = qi * bs, nr = std::min(qend * bs, N) - r0;
      const float* qrow = qp + ((bi * H + hi) * N + r0) * D;
      const float* kbase = kp + (bi * H + hi) * M * D;
      const float* vbase = vp + (bi * H + hi) * M * DV;
      std::fill(acc.begin(), acc.begin() + nr * DV, 0.f);
      std::fill(row_max.begin(), row_max.begin() + nr, neg_inf);
      std::fill(row_sum.begin(), row_sum.begin() + nr, 0.f);
      int32_t t = 0;
      while (t < kept) {
        // gather the runs of this chunk
        run_start.clear(); run_len.clear(); run_col.clear();
        int64_t cols = 0;
        while (t < kept && cols < KV_CHUNK) {
          int32_t u = t;
          while (u + 1 < kept && blocks[u + 1] == blocks[u] + 1 && cols + (u - t + 2) * bs <= KV_CHUNK + bs) ++u;
          const int64_t c0 = static_cast<int64_t>(blocks[t]) * bs;
          const int64_t len = std::min(static_cast<int64_t>(blocks[u] + 1) * bs, M) - c0;
          run_start.push_back(c0); run_len.push_back(len); run_col.push_back(cols);
          cols += len;
          t = u + 1;
        }
        const int ldc = static_cast<int>(cols);
        for (size_t r = 0; r < run_start.size(); ++r) {  // S[:, col..col+len) = Q_i · K_runᵀ
          const int m_ = static_cast<int>(run_len[r]), n_ = static_cast<int>(nr), k_ = static_cast<int>(D);
          const int lda = static_cast<int>(D), ldb = static_cast<int>(D);
          const float one = 1.f, zero = 0.f;
          sgemm_("T", "N", &m_, &n_, &k_, &one, kbase + run_start[r] * D, &lda, qrow, &ldb, &zero,
                 s.data() + run_col[r], &ldc);
        }
        for (int64_t r = 0; r < nr; ++r) {  // online softmax: max, then exp and sum in one pass
          float* sr = s.data() + r * cols;
          const float mx = at::vec::reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, sr,
                                                      cols) * scale;
          const float m_new = std::max(row_max[r], mx);
          const float alpha = std::exp(row_max[r] - m_new);  // 0 on the first chunk (exp(-inf))
          const Vec vscale(scale), vmax(m_new);
          Vec vsum(0.f);
          int64_t i = 0;
          for (; i + Vec::size() <= cols; i += Vec::size()) {
            Vec x = (Vec::loadu(sr + i) * vscale - vmax).exp_u20();
            x.store(sr + i);
            vsum = vsum + x;
          }
          float sum = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, vsum);
          for (; i < cols; ++i) {
            const float e = std::exp(sr[i] * scale - m_new);
            sr[i] = e;
            sum += e;
          }
          row_sum[r] = row_sum[r] * alpha + sum;
          row_max[r] = m_new;
          if (alpha != 1.f && alpha != 0.f) {
            float* ar = acc.data() + r * DV;
            at::vec::map([alpha](Vec x) { return x * Vec(alpha); }, ar, ar, DV);
          }
        }
        for (size_t r = 0; r < run_start.size(); ++r) {  // acc += P[:, run] · V_run
          const int m_ = static_cast<int>(DV), n_ = static_cast<int>(nr), k_ = static_cast<int>(run_len[r]);
          const int lda = static_cast<int>(DV), ldc_o = static_cast<int>(DV);
          const float one = 1.f;
          sgemm_("N", "N", &m_, &n_, &k_, &one, vbase + run_start[r] * DV, &lda, s.data() + run_col[r], &ldc,
                 &one, acc.data(), &ldc_o);
        }
      }
      float* orow = outp + ((bi * H + hi) * N + r0) * DV;
      for (int64_t r = 0; r < nr; ++r) {
        const float inv = 1.f / row_sum[r];
        at::vec::map([inv](Vec x) { return x * Vec(inv); }, orow + r * DV, acc.data() + r * DV, DV);
      }
    }
  });
  return out;
}

// How many distinct threads run the items of an at::parallel_for over n items, as the kernel's loop does: a check
// that this build parallelizes (1 when compiled without OpenMP, whatever torch.get_num_threads() says).
int64_t parallel_threads(int64_t n) {
  std::vector<int> used(std::max(at::get_num_threads(), 1), 0);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    const int t = at::get_thread_num();
    if (begin < end && t >= 0 && t < static_cast<int>(used.size())) used[t] = 1;
  });
  return std::count(used.begin(), used.end(), 1);
}

// Registered as torch operators (torch.ops.diffprobe_block_sparse.*), not a pybind11 module: ATen's headers alone
// compile in about a third of the time torch/extension.h takes (10 s against 28 s here).
TORCH_LIBRARY(diffprobe_block_sparse, m) {
  m.def("forward", &block_sparse_forward);
  m.def("parallel_threads", &parallel_threads);
}
