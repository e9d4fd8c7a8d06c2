// fp32 -> f16 narrowing, round to nearest even; used only to write test checkpoints.
#include "common/half.h"

namespace fi {

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00;   // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: inf
  if (a < 0x38800000u) {                       // below the smallest f16 normal 2^-14
    if (a < 0x33000000u) return sign;          // below half the smallest subnormal: zero
    uint32_t e = a >> 23, man = (a & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;                   // value = man * 2^(e-150); want units of 2^-24
    uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;
    return sign | uint16_t(q);
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1);  // round mantissa to 10 bits
  return sign | uint16_t(((r >> 13) - (112u << 10)) & 0xffff);
}

}  // namespace fi
