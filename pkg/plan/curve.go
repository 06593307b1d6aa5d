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
// N, C ≥ 0.
func fitCurves(n []float64) (saturating, withFlow curve) {
	q := make([]float64, len(n))
	w := make([]float64, len(n))
	for i, v := range n {
		// A day's error: the model's misfit, relative (misfitPerDay), plus Poisson noise.
		v = math.Max(v, 1)
		w[i] = 1 / (misfitPerDay*misfitPerDay*v*v + v)
	}
	type best struct {
		loss float64
		c    curve
	}
	bs, bf := best{loss: math.Inf(1)}, best{loss: math.Inf(1)}
	try := func(a, b float64) {
		shares(a, b, q)
		N, l := fitScale(n, q, w)
		if l < bs.loss {
			bs = best{l, curve{a, b, N, 0}}
		}
		N, C, l := fitScaleFlow(n, q, w)
		if l < bf.loss {
			bf = best{l, curve{a, b, N, C}}
		}
	}
	// α in [0.02, 20], β in [0.05, 500], ten steps a decade.
	const step = 0.1
	for i := 0; i <= 30; i++ {
		for j := 0; j <= 40; j++ {
			try(0.02*math.Pow(10, float64(i)*step), 0.05*math.Pow(10, float64(j)*step))
		}
	}
	for _, b := range []curve{bs.c, bf.c} {
		la, lb := math.Log10(b.alpha), math.Log10(b.beta)
		for i := -4; i <= 4; i++ {
			for j := -4; j <= 4; j++ {
				try(math.Pow(10, la+float64(i)*step/4), math.Pow(10, lb+float64(j)*step/4))
			}
		}
	}
	return bs.c, bf.c
}

// fitScale is the N ≥ 0 minimising Σ w (n − N q)², and that sum.
func fitScale(n, q, w []float64) (N, loss float64) {
	var sqq, sqn float64
	for t := range n {
		sqq += w[t] * q[t] * q[t]
		sqn += w[t] * q[t] * n[t]
	}
	if sqq > 0 {
		N = math.Max(0, sqn/sqq)
	}
	return N, sumSq(n, q, w, N, 0)
}

// fitScaleFlow is the N, C ≥ 0 minimising Σ w (n − N q − C)², and that sum.
func fitScaleFlow(n, q, w []float64) (N, C, loss float64) {
	var sw, sq, sn, sqq, sqn float64
	for t := range n {
		sw += w[t]
		sq += w[t] * q[t]
		sn += w[t] * n[t]
		sqq += w[t] * q[t] * q[t]
		sqn += w[t] * q[t] * n[t]
	}
	if det := sw*sqq - sq*sq; det > 1e-12*sw*sqq {
		N, C = (sw*sqn-sq*sn)/det, (sqq*sn-sq*sqn)/det
		if N >= 0 && C >= 0 {
			return N, C, sumSq(n, q, w, N, C)
		}
	}
	// On the boundary: the better of the flow alone and the population alone.
	N, l := fitScale(n, q, w)
	C = sn / sw
	if lc := sumSq(n, q, w, 0, C); lc < l {
		return 0, C, lc
	}
	return N, 0, l
}

func sumSq(n, q, w []float64, N, C float64) float64 {
	var l float64
	for t := range n {
		d := n[t] - N*q[t] - C
		l += w[t] * d * d
	}
	return l
}
