// test_kernels.cpp: runs every kernel of kernels/*.cu in the host emulator (cuda_emu.hpp) and
// compares it with a plain reference written here (f64 where the contract says so, f32 op by op
// where the kernels promise bitwise equality). Odd sizes, misaligned views, grids smaller than
// the work, several blocks per reduction, and both the float4 and the scalar paths are covered.
//
// Build and run (scripts/check-kernels.sh does this):
//   g++ -std=c++20 -O1 -ffp-contract=off -pthread -I kernels/emu/shim -I kernels \
//       kernels/emu/test_kernels.cpp -o /tmp/test_kernels && /tmp/test_kernels
#include "cuda_emu.hpp"

#include "../augment.cu"
#include "../batchnorm.cu"
#include "../elementwise.cu"
#include "../optim.cu"
#include "../reduce.cu"

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>

using ilr_emu::launch;

static int g_failed = 0, g_passed = 0;

static void report(bool ok, const std::string& what, const std::string& detail = "") {
    if (ok) {
        ++g_passed;
    } else {
        ++g_failed;
        std::printf("FAIL %s %s\n", what.c_str(), detail.c_str());
    }
}

// |got - want| <= atol + rtol*|want| elementwise.
template <typename A, typename B>
static void close(const std::string& what, const A* got, const B* want, size_t n, double rtol, double atol) {
    double worst = 0;
    size_t at = 0;
    bool ok = true;
    for (size_t i = 0; i < n; ++i) {
        const double g = (double)got[i], w = (double)want[i];
        const double err = std::fabs(g - w);
        const double lim = atol + rtol * std::fabs(w);
        if (!(err <= lim) && !(std::isnan(g) && std::isnan(w))) {
            if (ok || err - lim > worst) {
                worst = err - lim;
                at = i;
            }
            ok = false;
        }
    }
    char buf[200] = "";
    if (!ok) std::snprintf(buf, sizeof buf, "at %zu: got %.9g want %.9g", at, (double)got[at], (double)want[at]);
    report(ok, what, buf);
}

template <typename T>
static void same(const std::string& what, const T* got, const T* want, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
            char buf[200];
            std::snprintf(buf, sizeof buf, "bits differ at %zu: got %.9g want %.9g", i, (double)got[i], (double)want[i]);
            report(false, what, buf);
            return;
        }
    report(true, what);
}

static std::mt19937_64 rng(12345);
static std::vector<float> randn(size_t n, double mean = 0, double sd = 1) {
    std::normal_distribution<double> d(mean, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = (float)d(rng);
    return v;
}
static double absmax(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::fabs(x));
    return m;
}

// ---------------------------------------------------------------------------------------------
// BatchNorm
// ---------------------------------------------------------------------------------------------
struct BnRef {
    std::vector<double> mean, var, y, running;
};

static BnRef bn_ref_forward(const std::vector<float>& x, const std::vector<float>& affine, const std::vector<float>& running,
                            int N, int C, int HW, double eps, double mom, bool relu) {
    const int M = N * HW;
    BnRef r;
    r.mean.assign(C, 0);
    r.var.assign(C, 0);
    r.y.assign(x.size(), 0);
    r.running.assign(2 * C, 0);
    for (int c = 0; c < C; ++c) {
        double s = 0;
        for (int n = 0; n < N; ++n)
            for (int i = 0; i < HW; ++i) s += x[((size_t)n * C + c) * HW + i];
        const double mean = s / M;
        double q = 0;
        for (int n = 0; n < N; ++n)
            for (int i = 0; i < HW; ++i) {
                const double d = x[((size_t)n * C + c) * HW + i] - mean;
                q += d * d;
            }
        const double var = q / M;
        r.mean[c] = mean;
        r.var[c] = var;
        const double invstd = 1.0 / std::sqrt(var + eps);
        const double scale = (double)affine[c] * invstd, shift = affine[C + c];
        for (int n = 0; n < N; ++n)
            for (int i = 0; i < HW; ++i) {
                const size_t k = ((size_t)n * C + c) * HW + i;
                double o = ((double)x[k] - mean) * scale + shift;
                if (relu) o = o > 0 ? o : 0;
                r.y[k] = (float)o;  // the CPU reference rounds once, from f64
            }
        const double unbias = M > 1 ? (double)M / (M - 1) : 1.0;
        r.running[c] = (1 - mom) * running[c] + mom * mean;
        r.running[C + c] = (1 - mom) * running[C + c] + mom * var * unbias;
    }
    return r;
}

struct BnOut {
    std::vector<float> y, running, saved;
};

static void test_batchnorm(int N, int C, int HW, bool relu, int x_offset, double x_mean) {
    const int M = N * HW;
    const double eps = 1e-5, mom = 0.1;
    const std::string tag = "bn[N=" + std::to_string(N) + ",C=" + std::to_string(C) + ",HW=" + std::to_string(HW) +
                            (relu ? ",relu" : "") + (x_offset ? ",misaligned" : "") + (x_mean != 0 ? ",offset-mean" : "") + "]";
    const size_t len = (size_t)N * C * HW;
    std::vector<float> xbuf = randn(len + x_offset, x_mean, 1.5);
    const float* x = xbuf.data() + x_offset;
    std::vector<float> xv(x, x + len);
    std::vector<float> affine = randn(2 * C, 0.5, 0.5);
    std::vector<float> running0 = randn(2 * C, 0, 1);
    for (int c = 0; c < C; ++c) running0[C + c] = std::fabs(running0[C + c]) + 0.5f;
    const BnRef ref = bn_ref_forward(xv, affine, running0, N, C, HW, eps, mom, relu);

    std::vector<double> ref_saved(2 * C);
    for (int c = 0; c < C; ++c) {
        ref_saved[c] = (float)ref.mean[c];
        ref_saved[C + c] = (float)(1.0 / std::sqrt(ref.var[c] + eps));
    }
    // The kernels follow the CPU formulas in f64 and round once: expect f32 results within one ulp
    // (rtol 2^-23), the difference coming only from the f64 summation order of the statistics.
    const double ulp = 1.2e-7, tiny = 1e-9;
    auto check_fwd = [&](const std::string& name, const BnOut& o) {
        close(tag + " " + name + " y", o.y.data() + x_offset, ref.y.data(), len, ulp, tiny);
        size_t eq = 0;
        for (size_t i = 0; i < len; ++i) eq += (float)o.y[x_offset + i] == (float)ref.y[i];
        report(eq * 100 >= len * 99, tag + " " + name + " y bitwise equal to the CPU formula for >= 99%");
        close(tag + " " + name + " saved.mean", o.saved.data(), ref_saved.data(), C, ulp, tiny);
        close(tag + " " + name + " saved.invstd", o.saved.data() + C, ref_saved.data() + C, C, ulp, 0);
        close(tag + " " + name + " running", o.running.data(), ref.running.data(), 2 * C, ulp, tiny);
    };

    std::vector<BnOut> outs;
    for (int cache = 0; cache < 2; ++cache) {
        BnOut o{std::vector<float>(len + x_offset, -7.f), running0, std::vector<float>(2 * C, -7.f)};
        launch(dim3{(unsigned)C}, dim3{64}, cache ? (size_t)M * 4 : 0, [&] {
            bn_fwd_train_fused(x, affine.data(), o.running.data(), o.saved.data(), o.y.data() + x_offset, N, C, HW, eps,
                               mom, relu, cache);
        });
        check_fwd(cache ? "fused+cache" : "fused", o);
        outs.push_back(o);
    }
    {
        const int S = 3, S2 = 2;
        std::vector<double> partials((size_t)C * S * 2, -1);
        BnOut o{std::vector<float>(len + x_offset, -7.f), running0, std::vector<float>(2 * C, -7.f)};
        launch(dim3{S, (unsigned)C}, dim3{32}, 0, [&] { bn_fwd_stats_partial(x, partials.data(), N, C, HW); });
        launch(dim3{S2, (unsigned)C}, dim3{64}, 0, [&] {
            bn_fwd_apply(x, affine.data(), partials.data(), S, o.running.data(), o.saved.data(), o.y.data() + x_offset, N,
                         C, HW, eps, mom, relu);
        });
        check_fwd("split", o);
        outs.push_back(o);
    }
    // The fused kernel with and without the cache must agree bitwise (same order of operations).
    same(tag + " fused cache vs no cache y", outs[0].y.data(), outs[1].y.data(), len + x_offset);

    // Eval forward.
    {
        std::vector<float> y(len + x_offset, -7.f);
        launch(dim3{2, (unsigned)C}, dim3{32}, 0,
               [&] { bn_fwd_eval(x, affine.data(), running0.data(), y.data() + x_offset, N, C, HW, eps, relu); });
        std::vector<float> want(len);
        for (int n = 0; n < N; ++n)
            for (int c = 0; c < C; ++c)
                for (int i = 0; i < HW; ++i) {
                    const size_t k = ((size_t)n * C + c) * HW + i;
                    const double scale = (double)affine[c] * (1.0 / std::sqrt((double)running0[C + c] + eps));
                    double o = ((double)x[k] - running0[c]) * scale + affine[C + c];
                    if (relu) o = o > 0 ? o : 0;
                    want[k] = (float)o;
                }
        same(tag + " eval y (bitwise vs CPU formula)", y.data() + x_offset, want.data(), len);
    }

    // Backward, from the fused forward's y and saved.
    const BnOut& f = outs[0];
    const float* yf = f.y.data() + x_offset;
    std::vector<float> dybuf = randn(len + x_offset);
    const float* dy = dybuf.data() + x_offset;
    // CPU reference (src/backend/cpu/batchnorm.rs::backward), op by op.
    std::vector<float> want_dx(len), want_da(2 * C);
    std::vector<double> contract_dx(len);
    for (int c = 0; c < C; ++c) {
        const double mu = f.saved[c], is = f.saved[C + c];
        double db = 0, dg = 0;
        for (int n = 0; n < N; ++n)
            for (int i = 0; i < HW; ++i) {
                const size_t k = ((size_t)n * C + c) * HW + i;
                const double d = (relu && yf[k] <= 0.f) ? 0.0 : (double)dy[k];
                db += d;
                dg += d * ((double)x[k] - mu) * is;
            }
        want_da[c] = (float)dg;
        want_da[C + c] = (float)db;
        const double kk = (double)affine[c] * is;
        for (int n = 0; n < N; ++n)
            for (int i = 0; i < HW; ++i) {
                const size_t k = ((size_t)n * C + c) * HW + i;
                const double d = (relu && yf[k] <= 0.f) ? 0.0 : (double)dy[k];
                const double xh = ((double)x[k] - mu) * is;
                want_dx[k] = (float)(kk * ((d - db / M) - xh * (dg / M)));
                contract_dx[k] = affine[c] * is / M * (M * d - db - xh * dg);  // the brief's form
            }
    }
    const double dxs = std::max(1e-3, absmax(contract_dx));
    close(tag + " reference vs contract form", want_dx.data(), contract_dx.data(), len, 1e-6, 1e-6 * dxs);
    const float* ymask = relu ? yf : nullptr;
    std::vector<std::vector<float>> dxs_all;
    for (int cache = 0; cache < 2; ++cache) {
        std::vector<float> dx(len + x_offset, -7.f), da(2 * C, -7.f);
        launch(dim3{(unsigned)C}, dim3{64}, cache ? (size_t)M * 8 : 0, [&] {
            bn_bwd_fused(x, ymask, dy, affine.data(), f.saved.data(), dx.data() + x_offset, da.data(), N, C, HW, cache);
        });
        const std::string nm = tag + (cache ? " bwd fused+cache" : " bwd fused");
        close(nm + " dx", dx.data() + x_offset, want_dx.data(), len, 2 * ulp, 1e-9 * dxs);
        size_t eq = 0;
        for (size_t i = 0; i < len; ++i) eq += dx[x_offset + i] == want_dx[i];
        report(eq * 100 >= len * 95, nm + " dx bitwise equal to the CPU formula for >= 95%");
        close(nm + " d_affine", da.data(), want_da.data(), 2 * C, ulp, 1e-9);
        dxs_all.push_back(dx);
    }
    same(tag + " bwd fused cache vs no cache dx", dxs_all[0].data(), dxs_all[1].data(), len + x_offset);
    {
        const int S = 4, S2 = 3;
        std::vector<double> partials((size_t)C * S * 2, -1);
        std::vector<float> dx(len + x_offset, -7.f), da(2 * C, -7.f);
        launch(dim3{S, (unsigned)C}, dim3{32}, 0,
               [&] { bn_bwd_partial(x, ymask, dy, f.saved.data(), partials.data(), N, C, HW); });
        launch(dim3{S2, (unsigned)C}, dim3{64}, 0, [&] {
            bn_bwd_apply(x, ymask, dy, affine.data(), f.saved.data(), partials.data(), S, dx.data() + x_offset, da.data(),
                         N, C, HW);
        });
        close(tag + " bwd split dx", dx.data() + x_offset, want_dx.data(), len, 2 * ulp, 1e-9 * dxs);
        close(tag + " bwd split d_affine", da.data(), want_da.data(), 2 * C, ulp, 1e-9);
    }
}

// A segment table: segment s has lens[s] elements and starts gaps[s] elements after the previous
// one ends; h_of(s, h) fills its scalars h. `len` is the flat buffers' length up to the last segment.
struct Table {
    std::vector<MtSegment> segs;
    size_t len = 0;
    unsigned int grid = 0;  // total chunks
};
template <typename H>
static Table make_table(const std::vector<unsigned long long>& lens, const std::vector<unsigned long long>& gaps,
                        int chunk, H h_of) {
    Table t;
    for (size_t s = 0; s < lens.size(); ++s) {
        MtSegment m{};
        t.len += gaps[s];
        m.offset = t.len;
        m.len = lens[s];
        m.first_chunk = t.grid;
        h_of(s, m.h);
        t.segs.push_back(m);
        t.len += lens[s];
        t.grid += (unsigned)((lens[s] + chunk - 1) / chunk);
    }
    return t;
}

// ---------------------------------------------------------------------------------------------
// SGD and the multi-tensor reductions
// ---------------------------------------------------------------------------------------------
static void test_sgd_and_reduce() {
    const std::vector<unsigned long long> lens = {5, 300, 0, 33, 64, 129, 1};
    const int chunk = 64;
    const Table tab = make_table(lens, std::vector<unsigned long long>(lens.size(), 0), chunk, [](size_t s, float* h) {
        h[0] = 0.1f * (float)(s + 1);  // lr
        h[1] = s % 2 ? 5e-4f : 0.f;    // wd
        h[2] = s % 3 ? 0.9f : 0.f;     // momentum
    });
    const std::vector<MtSegment>& segs = tab.segs;
    const size_t total = tab.len;
    const unsigned int grid = tab.grid;
    const int ns = (int)segs.size();
    std::vector<float> w0 = randn(total), g = randn(total, 0, 0.1), v0 = randn(total, 0, 0.01);

    auto run = [&](std::vector<float>& w, std::vector<float>& v, std::vector<double>* sums) {
        std::vector<double> partials(grid * 4, -1);
        unsigned int counter = 0;
        if (sums) sums->assign(ns * 4, -1);
        launch(dim3{grid}, dim3{32}, 0, [&] {
            sgd_step_multi(w.data(), g.data(), v.data(), segs.data(), ns, chunk, sums ? partials.data() : nullptr,
                           sums ? sums->data() : nullptr, sums ? &counter : nullptr);
        });
        report(counter == 0, "sgd counter reset to 0");
    };
    // Reference, op by op in f32 (bitwise), sums in f64.
    std::vector<float> wr = w0, vr = v0;
    std::vector<double> sr(ns * 4, 0);
    for (int s = 0; s < ns; ++s)
        for (unsigned long long i = segs[s].offset; i < segs[s].offset + segs[s].len; ++i) {
            const float lr = segs[s].h[0], wd = segs[s].h[1], mom = segs[s].h[2];
            const float gp = g[i] + wd * w0[i];
            const float vn = mom * v0[i] + gp;
            const float wn = w0[i] - lr * vn;
            wr[i] = wn;
            vr[i] = vn;
            const double d = (double)wn - (double)w0[i];
            sr[s * 4 + 0] += (double)w0[i] * w0[i];
            sr[s * 4 + 1] += (double)g[i] * g[i];
            sr[s * 4 + 2] += d * d;
            sr[s * 4 + 3] += (double)w0[i] * d;
        }
    std::vector<float> w = w0, v = v0;
    std::vector<double> sums;
    run(w, v, &sums);
    same("sgd w (bitwise vs f32 reference)", w.data(), wr.data(), total);
    same("sgd v (bitwise vs f32 reference)", v.data(), vr.data(), total);
    close("sgd sums", sums.data(), sr.data(), ns * 4, 1e-12, 1e-300);
    {
        std::vector<float> w2 = w0, v2 = v0;
        std::vector<double> sums2;
        run(w2, v2, &sums2);
        same("sgd sums deterministic", sums2.data(), sums.data(), ns * 4);
        std::vector<float> w3 = w0, v3 = v0;
        run(w3, v3, nullptr);
        same("sgd w without stats", w3.data(), wr.data(), total);
    }
    // Misaligned flat buffers: the scalar path everywhere.
    {
        std::vector<float> wb(total + 1), vb(total + 1), gb(total + 1);
        std::copy(w0.begin(), w0.end(), wb.begin() + 1);
        std::copy(v0.begin(), v0.end(), vb.begin() + 1);
        std::copy(g.begin(), g.end(), gb.begin() + 1);
        std::vector<double> partials(grid * 4), s4(ns * 4);
        unsigned int counter = 0;
        launch(dim3{grid}, dim3{64}, 0, [&] {
            sgd_step_multi(wb.data() + 1, gb.data() + 1, vb.data() + 1, segs.data(), ns, chunk, partials.data(), s4.data(),
                           &counter);
        });
        same("sgd misaligned w", wb.data() + 1, wr.data(), total);
        close("sgd misaligned sums", s4.data(), sr.data(), ns * 4, 1e-12, 1e-300);
    }
    // multi_sums4 on (w_t, g, w_{t+1}) reproduces the fused sums bitwise (same chunk and block).
    {
        std::vector<double> partials(grid * 4), out(ns * 4, -1);
        unsigned int counter = 0;
        launch(dim3{grid}, dim3{32}, 0, [&] {
            multi_sums4(w0.data(), g.data(), w.data(), segs.data(), ns, chunk, partials.data(), out.data(), &counter);
        });
        same("multi_sums4 == sgd fused sums", out.data(), sums.data(), ns * 4);
        report(counter == 0, "multi_sums4 counter reset");
        launch(dim3{grid}, dim3{32}, 0, [&] {
            multi_sums4(w0.data(), nullptr, nullptr, segs.data(), ns, chunk, partials.data(), out.data(), &counter);
        });
        bool ok = true;
        for (int s = 0; s < ns; ++s)
            ok &= out[s * 4] == sums[s * 4] && out[s * 4 + 1] == 0 && out[s * 4 + 2] == 0 && out[s * 4 + 3] == 0;
        report(ok, "multi_sums4 with g = w_next = 0");
    }
    {
        std::vector<double> partials(grid), out(ns, -1), want(ns);
        unsigned int counter = 0;
        launch(dim3{grid}, dim3{32}, 0,
               [&] { multi_sqnorm(w0.data(), segs.data(), ns, chunk, partials.data(), out.data(), &counter); });
        for (int s = 0; s < ns; ++s) want[s] = sums[s * 4];
        same("multi_sqnorm == sum w^2", out.data(), want.data(), ns);
        launch(dim3{grid}, dim3{32}, 0,
               [&] { multi_dot(w0.data(), w0.data(), segs.data(), ns, chunk, partials.data(), out.data(), &counter); });
        same("multi_dot(w, w) == sum w^2", out.data(), want.data(), ns);
        launch(dim3{grid}, dim3{32}, 0,
               [&] { multi_dot(w0.data(), g.data(), segs.data(), ns, chunk, partials.data(), out.data(), &counter); });
        for (int s = 0; s < ns; ++s) {
            want[s] = 0;
            for (unsigned long long i = segs[s].offset; i < segs[s].offset + segs[s].len; ++i) want[s] += (double)w0[i] * g[i];
        }
        close("multi_dot(w, g)", out.data(), want.data(), ns, 1e-12, 1e-300);
        report(counter == 0, "reduce counter reset");
    }
}

// ---------------------------------------------------------------------------------------------
// Adam(W), Adam + L2 and Lion against a plain f32 reference written from the CPU backend
// (src/backend/cpu/adam.rs, lion.rs), op by op, so bitwise; sums in f64. The table has gaps between
// segments (left untouched), a segment of several chunks and a zero-length one; state buffers hold
// mid-training values, and some elements have g = m = 0 (Lion: c = 0, sign 0).
// ---------------------------------------------------------------------------------------------
enum class Opt { AdamW, AdamL2, Lion };

static void test_adam_lion(Opt opt) {
    const char* name = opt == Opt::AdamW ? "adamw" : opt == Opt::AdamL2 ? "adam+l2" : "lion";
    const bool adam = opt != Opt::Lion;
    const int chunk = 64;
    const std::vector<unsigned long long> lens = {5, 300, 0, 33, 64, 1, 130}, gaps = {0, 3, 2, 0, 7, 1, 4};
    const double beta1 = adam ? 0.9 : 0.95, beta2 = adam ? 0.999 : 0.98, eps = 1e-8;
    const int t = 3;
    const Table tab = make_table(lens, gaps, chunk, [&](size_t s, float* h) {
        // The host's scalars: f64, rounded to f32 once (as src/backend/cuda/optim_step.rs forms them).
        const double lr = (adam ? 1e-3 : 1e-4) * (double)(s + 1), wd = s % 2 ? 0.1 : 0.0;
        const double decay = opt == Opt::AdamL2 ? 1.0 : 1.0 - lr * wd;
        const double adam_h[8] = {decay, opt == Opt::AdamL2 ? wd : 0.0, 1.0 - beta1, beta2, 1.0 - beta2,
                                  lr / (1.0 - std::pow(beta1, t)), std::sqrt(1.0 - std::pow(beta2, t)), eps};
        const double lion_h[8] = {lr, decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, 0.0, 0.0};
        for (int k = 0; k < 8; ++k) h[k] = (float)(adam ? adam_h[k] : lion_h[k]);
    });
    const std::vector<MtSegment>& segs = tab.segs;
    const size_t total = tab.len + 2;  // and two untouched elements after the last segment
    const unsigned int grid = tab.grid;
    const int ns = (int)segs.size();
    std::vector<float> w0 = randn(total), g = randn(total, 0, 0.1), m0 = randn(total, 0, 0.05), v0 = randn(total, 0, 0.01);
    for (auto& x : v0) x = x * x;  // v ≥ 0
    for (size_t i = 0; i < total; i += 17) g[i] = m0[i] = 0.f;

    // Reference: the CPU's expressions with the segment's f32 scalars.
    std::vector<float> wr = w0, mr = m0, vr = v0;
    std::vector<double> sr(ns * 4, 0);
    int zero_c = 0;  // Lion elements with c == 0
    for (int s = 0; s < ns; ++s) {
        const float* h = segs[s].h;
        for (unsigned long long i = segs[s].offset; i < segs[s].offset + segs[s].len; ++i) {
            const float old = w0[i];
            if (adam) {
                const float gl = g[i] + h[1] * old;
                mr[i] = mr[i] + h[2] * (gl - mr[i]);
                vr[i] = h[3] * vr[i] + h[4] * (gl * gl);
                wr[i] = old * h[0] - h[5] * (mr[i] / (std::sqrt(vr[i]) / h[6] + h[7]));
            } else {
                const float c = h[2] * mr[i] + h[3] * g[i];
                const float sign = c > 0 ? 1.f : c < 0 ? -1.f : c;
                zero_c += c == 0;
                wr[i] = old * h[1] - h[0] * sign;
                mr[i] = h[4] * mr[i] + h[5] * g[i];
            }
            const double d = (double)wr[i] - (double)old;
            sr[s * 4 + 0] += (double)old * old;
            sr[s * 4 + 1] += (double)g[i] * g[i];
            sr[s * 4 + 2] += d * d;
            sr[s * 4 + 3] += (double)old * d;
        }
    }
    // Runs the kernel on copies of (w0, m0, v0) placed `shift` elements into their buffers.
    auto run = [&](size_t shift, unsigned int block, bool stats, const std::string& tag) {
        std::vector<float> w(total + shift), gb(total + shift), m(total + shift), v(total + shift);
        std::copy(w0.begin(), w0.end(), w.begin() + shift);
        std::copy(g.begin(), g.end(), gb.begin() + shift);
        std::copy(m0.begin(), m0.end(), m.begin() + shift);
        std::copy(v0.begin(), v0.end(), v.begin() + shift);
        std::vector<double> partials(grid * 4, -1), sums(ns * 4, -1);
        unsigned int counter = 0;
        double* p = stats ? partials.data() : nullptr;
        double* out = stats ? sums.data() : nullptr;
        unsigned int* c = stats ? &counter : nullptr;
        float *pw = w.data() + shift, *pg = gb.data() + shift, *pm = m.data() + shift, *pv = v.data() + shift;
        launch(dim3{grid}, dim3{block}, 0, [&] {
            if (adam)
                adam_step_multi(pw, pg, pm, pv, segs.data(), ns, chunk, p, out, c);
            else
                lion_step_multi(pw, pg, pm, segs.data(), ns, chunk, p, out, c);
        });
        const std::string what = std::string(name) + tag;
        same(what + " w (bitwise)", pw, wr.data(), total);
        same(what + " m (bitwise)", pm, mr.data(), total);
        same(what + " v (bitwise; Lion leaves it)", pv, vr.data(), total);
        if (stats) {
            close(what + " sums", sums.data(), sr.data(), ns * 4, 1e-12, 1e-300);
            report(counter == 0, what + " counter reset to 0");
        }
    };
    run(0, 32, true, "");
    run(0, 32, false, " without stats");
    run(1, 64, true, " misaligned");

    // The reference is not vacuous: every segment moved, the gaps did not, and sign(0) occurred.
    bool moved = true;
    for (int s = 0; s < ns; ++s) moved &= segs[s].len == 0 || sr[s * 4 + 2] > 0;
    report(moved && wr[5] == w0[5] && wr[total - 1] == w0[total - 1], std::string(name) + " reference moves segments only");
    if (!adam) report(zero_c > 10, "lion reference has c = 0 elements");
}

// ---------------------------------------------------------------------------------------------
// Elementwise
// ---------------------------------------------------------------------------------------------
static void test_elementwise() {
    // add_assign: aligned (vector path + tail) and misaligned (scalar), grid smaller than the work.
    for (int offs = 0; offs < 2; ++offs) {
        const long long n = 1001;
        std::vector<float> yb = randn(n + 1), xb = randn(n + 1);
        std::vector<float> want(n);
        for (long long i = 0; i < n; ++i) want[i] = yb[i + offs] + xb[i + offs];
        launch(dim3{2}, dim3{32}, 0, [&] { add_assign_f32(yb.data() + offs, xb.data() + offs, n); });
        same(std::string("add_assign") + (offs ? " misaligned" : ""), yb.data() + offs, want.data(), n);
    }
    // Option-A shortcut, odd spatial size, stride 2 and 1.
    for (int stride = 1; stride <= 2; ++stride) {
        const int N = 2, Ci = 3, H = 5, W = 7, Co = stride == 2 ? 8 : 3;
        const int Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride, off = (Co - Ci) / 2;
        std::vector<float> x = randn((size_t)N * Ci * H * W), y((size_t)N * Co * Ho * Wo, -7.f), want(y.size());
        for (int n = 0; n < N; ++n)
            for (int co = 0; co < Co; ++co)
                for (int i = 0; i < Ho; ++i)
                    for (int j = 0; j < Wo; ++j) {
                        const int ci = co - off;
                        want[(((size_t)n * Co + co) * Ho + i) * Wo + j] =
                            (ci >= 0 && ci < Ci) ? x[(((size_t)n * Ci + ci) * H + i * stride) * W + j * stride] : 0.f;
                    }
        launch(dim3{3}, dim3{32}, 0, [&] { shortcut_fwd(x.data(), y.data(), N, Ci, H, W, Co, stride); });
        same("shortcut_fwd stride " + std::to_string(stride), y.data(), want.data(), y.size());
        std::vector<float> dy = randn(y.size()), dx = randn(x.size()), wdx = dx;
        for (int n = 0; n < N; ++n)
            for (int ci = 0; ci < Ci; ++ci)
                for (int i = 0; i < Ho; ++i)
                    for (int j = 0; j < Wo; ++j)
                        wdx[(((size_t)n * Ci + ci) * H + i * stride) * W + j * stride] +=
                            dy[(((size_t)n * Co + ci + off) * Ho + i) * Wo + j];
        launch(dim3{2}, dim3{64}, 0, [&] { shortcut_bwd_acc(dy.data(), dx.data(), N, Ci, H, W, Co, stride); });
        same("shortcut_bwd_acc stride " + std::to_string(stride), dx.data(), wdx.data(), dx.size());
    }
    // Average pool, hw = 49 (scalar) and 64 (vector).
    for (int hw : {49, 64}) {
        const int rows = 7;
        std::vector<float> x = randn((size_t)rows * hw), y(rows, -7.f);
        std::vector<double> want(rows);
        for (int r = 0; r < rows; ++r) {
            double s = 0;
            for (int i = 0; i < hw; ++i) s += x[(size_t)r * hw + i];
            want[r] = (float)(s / hw);
        }
        launch(dim3{2}, dim3{64}, 0, [&] { avgpool_fwd(x.data(), y.data(), rows, hw); });
        close("avgpool_fwd hw " + std::to_string(hw), y.data(), want.data(), rows, 1e-7, 0);
        std::vector<float> dy = randn(rows), dx((size_t)rows * hw, -7.f), wdx(dx.size());
        for (size_t i = 0; i < dx.size(); ++i) wdx[i] = dy[i / hw] / (float)hw;
        launch(dim3{3}, dim3{32}, 0, [&] { avgpool_bwd(dy.data(), dx.data(), rows, hw); });
        same("avgpool_bwd hw " + std::to_string(hw), dx.data(), wdx.data(), dx.size());
    }
    // Softmax cross-entropy.
    for (int classes : {10, 37}) {
        const int n = 9;
        std::vector<float> z = randn((size_t)n * classes, 0, 3);
        std::vector<unsigned int> labels(n);
        for (int i = 0; i < n; ++i) labels[i] = (unsigned)((i * 7) % classes);
        // ties: row 1 has its maximum at 3 and 7; row 2 all equal.
        z[1 * classes + 3] = 50.f;
        z[1 * classes + 7] = 50.f;
        for (int k = 0; k < classes; ++k) z[2 * classes + k] = 1.25f;
        labels[1] = 3;
        std::vector<double> wl(n);
        std::vector<unsigned int> wp(n);
        std::vector<double> wd((size_t)n * classes);
        double wsum = 0, wcorrect = 0;
        for (int i = 0; i < n; ++i) {
            const float* r = &z[(size_t)i * classes];
            int best = 0;
            for (int k = 1; k < classes; ++k)
                if (r[k] > r[best]) best = k;
            double m = r[best], se = 0;
            for (int k = 0; k < classes; ++k) se += std::exp((double)r[k] - m);
            wl[i] = (m - r[labels[i]]) + std::log(se);
            wp[i] = (unsigned)best;
            for (int k = 0; k < classes; ++k)
                wd[(size_t)i * classes + k] =
                    (float)((std::exp((double)r[k] - m) / se - (k == (int)labels[i] ? 1.0 : 0.0)) * (1.0 / n));
            wsum += wl[i];
            wcorrect += wp[i] == labels[i];
        }
        std::vector<float> d((size_t)n * classes, -7.f);
        std::vector<double> loss(n, -1), totals(2, -1);
        std::vector<unsigned int> pred(n, 999);
        unsigned int counter = 0;
        launch(dim3{3}, dim3{64}, 0, [&] {
            softmax_xent(z.data(), labels.data(), n, classes, d.data(), loss.data(), pred.data(), totals.data(), &counter);
        });
        const std::string t = "softmax_xent classes " + std::to_string(classes);
        close(t + " loss", loss.data(), wl.data(), n, 1e-12, 1e-12);
        same(t + " pred (ties to lowest)", pred.data(), wp.data(), n);
        close(t + " dlogits", d.data(), wd.data(), d.size(), 1.2e-7, 1e-12);
        close(t + " totals.loss", &totals[0], &wsum, 1, 1e-12, 0);
        close(t + " totals.correct", &totals[1], &wcorrect, 1, 0, 0);
        report(counter == 0, t + " counter reset");
        // Eval form: no dlogits, no totals; an invalid label gives NaN.
        labels[4] = (unsigned)classes;
        launch(dim3{1}, dim3{32}, 0, [&] {
            softmax_xent(z.data(), labels.data(), n, classes, nullptr, loss.data(), pred.data(), nullptr, nullptr);
        });
        report(std::isnan(loss[4]) && loss[3] == loss[3], t + " invalid label -> NaN");
    }
    // bf16 casts: both paths; RNE ties.
    for (int offs = 0; offs < 2; ++offs) {
        const long long n = 203;
        std::vector<float> x = randn(n + 1);
        x[5] = 1.00390625f;      // exactly halfway between two bf16 values: ties to even
        x[6] = 1.01171875f;      // halfway, rounds up to even
        x[7] = -0.f;
        std::vector<__nv_bfloat16> b(n + 1);
        std::vector<float> back(n + 1, -7.f);
        launch(dim3{2}, dim3{32}, 0, [&] { cast_f32_to_bf16(x.data() + offs, b.data() + offs, n); });
        launch(dim3{2}, dim3{32}, 0, [&] { cast_bf16_to_f32(b.data() + offs, back.data() + offs, n); });
        std::vector<float> want(n);
        bool ok = true;
        for (long long i = 0; i < n; ++i) {
            want[i] = __bfloat162float(__float2bfloat16_rn(x[i + offs]));
            ok &= std::fabs(want[i] - x[i + offs]) <= std::fabs(x[i + offs]) * (1.0 / 256);
        }
        report(ok, "bf16 reference within half an ulp");
        same(std::string("bf16 round trip") + (offs ? " misaligned" : ""), back.data() + offs, want.data(), n);
        if (offs == 0) {
            report(b[5].x == 0x3f80 && b[6].x == 0x3f82, "bf16 ties to even");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Augmentation
// ---------------------------------------------------------------------------------------------
static void test_augment() {
    const int images = 4, C = 3, H = 5, W = 6, pad = 4, n = 3;
    std::vector<unsigned char> data((size_t)images * C * H * W);
    for (auto& v : data) v = (unsigned char)(rng() & 0xff);
    std::vector<unsigned int> idx = {2, 0, 3}, labels_all = {10, 11, 12, 13}, labels(n, 99);
    std::vector<int> aug = {-4, 3, 1, 0, 0, 0, 2, -1, 1};  // {dy, dx, flip} per sample
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, sd[3] = {0.247f, 0.243f, 0.261f};
    std::vector<float> table(C * 256);
    for (int c = 0; c < C; ++c)
        for (int v = 0; v < 256; ++v) table[c * 256 + v] = ((float)v / 255.0f - mean[c]) / sd[c];
    (void)pad;
    for (int with_aug = 0; with_aug < 2; ++with_aug) {
        std::vector<float> out((size_t)n * C * H * W, -7.f), want(out.size());
        for (int b = 0; b < n; ++b)
            for (int c = 0; c < C; ++c)
                for (int i = 0; i < H; ++i)
                    for (int j = 0; j < W; ++j) {
                        const int dy = with_aug ? aug[3 * b] : 0, dx = with_aug ? aug[3 * b + 1] : 0;
                        const bool flip = with_aug && aug[3 * b + 2];
                        const int xx = flip ? W - 1 - j : j;
                        const int r = i + dy, s = xx + dx;
                        const unsigned v =
                            (r >= 0 && r < H && s >= 0 && s < W) ? data[(((size_t)idx[b] * C + c) * H + r) * W + s] : 0;
                        want[(((size_t)b * C + c) * H + i) * W + j] = table[c * 256 + v];
                    }
        launch(dim3{2}, dim3{64}, 0, [&] {
            augment_batch(data.data(), idx.data(), with_aug ? aug.data() : nullptr, table.data(), out.data(), n, C, H, W,
                          labels_all.data(), labels.data());
        });
        same(std::string("augment_batch") + (with_aug ? " crop+flip" : " plain"), out.data(), want.data(), out.size());
    }
    report(labels[0] == 12 && labels[1] == 10 && labels[2] == 13, "augment_batch labels");
}

int main() {
    test_batchnorm(3, 5, 7, false, 0, 0.0);   // scalar path (HW odd)
    test_batchnorm(3, 5, 7, true, 0, 0.0);
    test_batchnorm(4, 3, 16, true, 0, 0.0);   // float4 path
    test_batchnorm(4, 3, 16, false, 1, 0.0);  // misaligned: scalar path with HW % 4 == 0
    test_batchnorm(2, 2, 1, true, 0, 0.0);    // M = 2
    test_batchnorm(5, 2, 12, false, 0, 1000.0);  // |mean| >> std: the shifted sums must not cancel
    test_sgd_and_reduce();
    test_adam_lion(Opt::AdamW);
    test_adam_lion(Opt::AdamL2);
    test_adam_lion(Opt::Lion);
    test_elementwise();
    test_augment();
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
