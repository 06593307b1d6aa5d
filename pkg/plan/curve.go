package plan

import "math"

// curve is the expected number of devices first seen on each day of a month: a population of
// N devices, each returning on a given day with its own probability p, p ~ Beta(α, β) across
// devices, plus a constant flow of C new devices a day.
//
// A device with return probability p is first seen on day t (1-based) with probability
// p(1−p)^(t−1); over Beta(α, β) that is q_t = S_(t−1) · α/(α+β+t−1) with S_0 = 1 and
// S_t = S_(t−1) · (β+t−1)/(α+β+t−1) the share not seen by day t (the shifted beta-geometric of
// customer-base analysis, the beta-binomial reach curve of media planning). A mixture of daily,
// weekly and occasional users is what the beta stands for; a single geometric cannot bend from
// the first days' fast decay to the slow tail, and a constant rate never bends at all.
type curve struct {
	alpha, beta, n, c float64
}

// at is the expected first-seen devices on day index t (0 = day 1).
func (c curve) at(t int) float64 {
	s := 1.0
	for j := range t {
		s *= (c.beta + float64(j)) / (c.alpha + c.beta + float64(j))
	}
	return c.n*s*c.alpha/(c.alpha+c.beta+float64(t)) + c.c
}

// shares fills q with q_1..q_len(q) of Beta(alpha, beta).
func shares(alpha, beta float64, q []float64) {
	s := 1.0
	for t := range q {
		j := float64(t)
		q[t] = s * alpha / (alpha + beta + j)
		s *= (beta + j) / (alpha + beta + j)
	}
}

// misfitPerDay is how far (relative) a day's first-seen count may stray from any smooth curve:
// weekdays, campaigns, outages.
const misfitPerDay = 0.05

// fitCurves fits the curve to the first-seen counts n of the complete days, twice: without a
// flow (C = 0: the month's population saturates) and with one. Weighted least squares, each
// day weighing 1/(misfitPerDay²·n² + n): relative errors for large counts, so the first day's
// size does not drown the tail, and Poisson noise for small ones; over a grid of shapes,
// coarse then refined around the best; N and C are linear given the shape, solved exactly with
// N, C ≥ 0, and the loss follows from the same weighted sums (no second pass).
func fitCurves(n []float64) (saturating, withFlow curve) {
	var sums fitSums
	w := make([]float64, len(n))
	for i, v := range n {
		// A day's error: the model's misfit, relative (misfitPerDay), plus Poisson noise.
		f := math.Max(v, 1)
		w[i] = 1 / (misfitPerDay*misfitPerDay*f*f + f)
		sums.w += w[i]
		sums.n += w[i] * v
		sums.nn += w[i] * v * v
	}
	type best struct {
		loss float64
		c    curve
	}
	bs, bf := best{loss: math.Inf(1)}, best{loss: math.Inf(1)}
	try := func(a, b float64) {
		// q_t of Beta(a, b) and the weighted sums that hold q, in one pass.
		sm := sums
		s := 1.0
		for t := range n {
			j := float64(t)
			inv := 1 / (a + b + j)
			q := s * a * inv
			s *= (b + j) * inv
			wq := w[t] * q
			sm.q += wq
			sm.qq += wq * q
			sm.qn += wq * n[t]
		}
		if N, l := sm.scale(); l < bs.loss {
			bs = best{l, curve{a, b, N, 0}}
		}
		if N, C, l := sm.scaleFlow(); l < bf.loss {
			bf = best{l, curve{a, b, N, C}}
		}
	}
	for _, a := range gridAlpha {
		for _, b := range gridBeta {
			try(a, b)
		}
	}
	for _, b := range []curve{bs.c, bf.c} {
		for _, ma := range gridRefine {
			for _, mb := range gridRefine {
				try(b.alpha*ma, b.beta*mb)
			}
		}
	}
	return bs.c, bf.c
}

// The grid of shapes: α in [0.02, 20] and β in [0.05, 500], ten steps a decade; then ±one
// step around each best at a quarter of it. (Five steps a decade land in other local minima:
// the sticky shape's day 7 then misses its range in the backtest.) Computed once: math.Pow
// was half of a fit.
var (
	gridAlpha  = decades(0.02, 3, 10)
	gridBeta   = decades(0.05, 4, 10)
	gridRefine = func() []float64 {
		out := make([]float64, 0, 9)
		for i := -4; i <= 4; i++ {
			out = append(out, math.Pow(10, float64(i)/40))
		}
		return out
	}()
)

// decades is from, from·10^(1/perDecade), … up to from·10^n.
func decades(from float64, n, perDecade int) []float64 {
	out := make([]float64, 0, n*perDecade+1)
	for i := 0; i <= n*perDecade; i++ {
		out = append(out, from*math.Pow(10, float64(i)/float64(perDecade)))
	}
	return out
}

// fitSums are the weighted sums Σw, Σw·n, Σw·n², Σw·q, Σw·q², Σw·q·n over the complete days.
type fitSums struct{ w, n, nn, q, qq, qn float64 }

// loss is Σ w (n − N q − C)², expanded.
func (s fitSums) loss(N, C float64) float64 {
	return s.nn - 2*N*s.qn - 2*C*s.n + N*N*s.qq + 2*N*C*s.q + C*C*s.w
}

// scale is the N ≥ 0 minimising Σ w (n − N q)², and that sum.
func (s fitSums) scale() (N, loss float64) {
	if s.qq > 0 {
		N = math.Max(0, s.qn/s.qq)
	}
	return N, s.loss(N, 0)
}

// scaleFlow is the N, C ≥ 0 minimising Σ w (n − N q − C)², and that sum.
func (s fitSums) scaleFlow() (N, C, loss float64) {
	if det := s.w*s.qq - s.q*s.q; det > 1e-12*s.w*s.qq {
		N, C = (s.w*s.qn-s.q*s.n)/det, (s.qq*s.n-s.q*s.qn)/det
		if N >= 0 && C >= 0 {
			return N, C, s.loss(N, C)
		}
	}
	// On the boundary: the better of the population alone and the flow alone.
	N, l := s.scale()
	if C = s.n / s.w; s.loss(0, C) < l {
		return 0, C, s.loss(0, C)
	}
	return N, 0, l
}
