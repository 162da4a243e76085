// Shortest round-trip decimals of FP16 values, for jsontensors.pyx. A V2 reply's FP16 data is
// handed to the JSON writer (orjson, which writes float32 arrays with the shortest text that
// round-trips float32) as the float32 nearest to each half's shortest decimal; that float32's
// own shortest text is then the half's (0.1 for float16(0.1), not 0.099975586).
//
// No standard formatter takes halves, so this is an exact search in integers: the interval of
// reals that round to the half (halfway to its neighbours, ends included for an even half, as
// round-half-to-even reads them) is cut on decimal grids from coarse to fine; the first grid
// with a point inside gives the shortest digits, and of its points the one nearest the value.
// Non-finite halves come back as the same non-finite values.
#ifndef FASTSELDON_SHORTEST_H
#define FASTSELDON_SHORTEST_H

#include <cmath>
#include <cstdint>
#include <limits>

namespace fss {

// The magnitude of half bits 0..0x7c00 in units of 2^-25 (0x7c00 reads as 2^16 = 65536, the
// step after the largest finite half, which bounds its rounding interval).
inline int64_t half_units(uint32_t mag) noexcept {
  uint32_t exp = mag >> 10, frac = mag & 0x3ff;
  if (exp == 0) return static_cast<int64_t>(frac) << 1;            // subnormal: frac * 2^-24
  return static_cast<int64_t>(frac | 0x400) << exp;                 // (1.frac) * 2^(exp-15) / 2^-25
}

inline double shortest_f16(uint16_t bits) noexcept {
  const bool negative = (bits & 0x8000) != 0;
  const uint32_t mag = bits & 0x7fff;
  if (mag >= 0x7c00) {  // infinity or NaN
    if (mag == 0x7c00) return negative ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (mag == 0) return negative ? -0.0 : 0.0;
  // Everything times 2 * 10^13 (units of 2^-25, then the decimal scale): the value V and the
  // interval's ends L, H (halfway to the neighbours) are integers below 2^88.
  typedef __int128 wide;
  const wide scale = static_cast<wide>(10000000000000LL);  // 10^13: the finest grid is 10^-13
  const wide V = static_cast<wide>(half_units(mag)) * 2 * scale;
  const wide L = static_cast<wide>(half_units(mag - 1) + half_units(mag)) * scale;
  const wide H = static_cast<wide>(half_units(mag) + half_units(mag + 1)) * scale;
  const bool ends_in = (mag & 1) == 0;  // round-half-to-even: an even half owns its interval's ends
  // a grid of 10^k (k from 5 down to -13) is 10^(k+13) * 2^26 in these units
  for (int k = 5; k >= -13; --k) {
    wide step = static_cast<wide>(1) << 26;
    for (int i = 0; i < k + 13; ++i) step *= 10;
    wide lo = L / step, hi = H / step;  // floor (all positive)
    if (lo * step < L || !ends_in) lo += 1;  // first grid point inside
    if (hi * step == H && !ends_in) hi -= 1;   // last grid point inside
    if (lo > hi) continue;
    wide q = V / step;  // nearest grid point to V, ties to even, kept inside [lo, hi]
    wide rem = V - q * step;
    if (rem * 2 > step || (rem * 2 == step && (q & 1))) q += 1;
    if (q < lo) q = lo;
    if (q > hi) q = hi;
    // q * 10^k as the nearest double: q < 2^53 and 10^|k| < 2^53 are exact, and one IEEE
    // multiplication or division rounds their exact product or quotient correctly
    double digits = static_cast<double>(static_cast<int64_t>(q));
    double ten = 1.0;
    for (int i = 0; i < (k < 0 ? -k : k); ++i) ten *= 10.0;
    double d = k < 0 ? digits / ten : digits * ten;
    return negative ? -d : d;
  }
  return 0.0;  // not reached: the 10^-13 grid always has a point inside
}

}  // namespace fss

#endif
