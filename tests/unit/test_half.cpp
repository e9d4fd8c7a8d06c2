// bf16/f16 <-> fp32: widening against fp32 bit patterns derived by hand from the IEEE formats,
// round-to-nearest-even narrowing at halfway, overflow and underflow points, exhaustive round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/half.h"

namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

bool f16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0; }
bool bf16_is_nan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x007f) != 0; }

// f16: sign 1, exponent 5 (bias 15), mantissa 10. fp32: sign 1, exponent 8 (bias 127), mantissa 23.
TEST(Half, F16ToF32KnownPatterns) {
  EXPECT_EQ(bits(fi::f16_to_f32(0x0000)), 0x00000000u);  // +0
  EXPECT_EQ(bits(fi::f16_to_f32(0x8000)), 0x80000000u);  // -0
  EXPECT_EQ(bits(fi::f16_to_f32(0x3c00)), 0x3f800000u);  // 1.0
  EXPECT_EQ(bits(fi::f16_to_f32(0xc000)), 0xc0000000u);  // -2.0
  EXPECT_EQ(bits(fi::f16_to_f32(0x3555)), 0x3eaaa000u);  // 0.333251953125
  EXPECT_EQ(bits(fi::f16_to_f32(0x7bff)), 0x477fe000u);  // 65504, the largest normal
  EXPECT_EQ(bits(fi::f16_to_f32(0x0400)), 0x38800000u);  // 2^-14, the smallest normal
  EXPECT_EQ(bits(fi::f16_to_f32(0x0001)), 0x33800000u);  // 2^-24, the smallest subnormal
  EXPECT_EQ(bits(fi::f16_to_f32(0x8001)), 0xb3800000u);  // -2^-24
  EXPECT_EQ(bits(fi::f16_to_f32(0x0002)), 0x34000000u);  // 2^-23
  EXPECT_EQ(bits(fi::f16_to_f32(0x0003)), 0x34400000u);  // 1.5 * 2^-23
  EXPECT_EQ(bits(fi::f16_to_f32(0x03ff)), 0x387fc000u);  // 1023 * 2^-24, the largest subnormal
  EXPECT_EQ(bits(fi::f16_to_f32(0x0200)), 0x38000000u);  // 2^-15
  EXPECT_EQ(bits(fi::f16_to_f32(0x7c00)), 0x7f800000u);  // +inf
  EXPECT_EQ(bits(fi::f16_to_f32(0xfc00)), 0xff800000u);  // -inf
  EXPECT_TRUE(std::isnan(fi::f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(fi::f16_to_f32(0x7c01)));  // signalling NaN stays NaN, not inf
  EXPECT_TRUE(std::isnan(fi::f16_to_f32(0xffff)));
}

// bf16 is the top half of an fp32.
TEST(Half, BF16ToF32KnownPatterns) {
  EXPECT_EQ(bits(fi::bf16_to_f32(0x0000)), 0x00000000u);
  EXPECT_EQ(bits(fi::bf16_to_f32(0x8000)), 0x80000000u);
  EXPECT_EQ(bits(fi::bf16_to_f32(0x3f80)), 0x3f800000u);  // 1.0
  EXPECT_EQ(bits(fi::bf16_to_f32(0xc000)), 0xc0000000u);  // -2.0
  EXPECT_EQ(bits(fi::bf16_to_f32(0x0001)), 0x00010000u);  // a subnormal
  EXPECT_EQ(bits(fi::bf16_to_f32(0x7f7f)), 0x7f7f0000u);  // the largest finite
  EXPECT_EQ(bits(fi::bf16_to_f32(0x7f80)), 0x7f800000u);  // +inf
  EXPECT_EQ(bits(fi::bf16_to_f32(0xff80)), 0xff800000u);  // -inf
  EXPECT_EQ(bits(fi::bf16_to_f32(0x7fc0)), 0x7fc00000u);
  EXPECT_TRUE(std::isnan(fi::bf16_to_f32(0x7fc0)));
  EXPECT_TRUE(std::isnan(fi::bf16_to_f32(0x7f81)));
}

TEST(Half, F32ToF16RoundsToNearestEven) {
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x3f800000)), 0x3c00);  // 1.0
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x80000000)), 0x8000);  // -0
  EXPECT_EQ(fi::f32_to_f16(from_bits(0xc0000000)), 0xc000);  // -2.0
  // 1 + 2^-11 is halfway between 0x3c00 and 0x3c01: to the even 0x3c00
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x3f801000)), 0x3c00);
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x3f801001)), 0x3c01);  // just above halfway
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x3f800fff)), 0x3c00);  // just below
  // 1 + 3*2^-11 is halfway between 0x3c01 and 0x3c02: to the even 0x3c02
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x3f803000)), 0x3c02);
  EXPECT_EQ(fi::f32_to_f16(from_bits(0xbf803000)), 0xbc02);
  // rounding carries into the exponent: 2 - 2^-11 is halfway between 0x3fff and 0x4000 (2.0)
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x3ffff000)), 0x4000);
}

TEST(Half, F32ToF16Overflow) {
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x477fe000)), 0x7bff);  // 65504
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x477fefff)), 0x7bff);  // just below 65520
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x477ff000)), 0x7c00);  // 65520, halfway, to even = 2^16: inf
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x49742400)), 0x7c00);  // 1e6
  EXPECT_EQ(fi::f32_to_f16(from_bits(0xc9742400)), 0xfc00);  // -1e6
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x7f800000)), 0x7c00);  // inf
  EXPECT_EQ(fi::f32_to_f16(from_bits(0xff800000)), 0xfc00);  // -inf
  EXPECT_TRUE(f16_is_nan(fi::f32_to_f16(from_bits(0x7fc00000))));
  EXPECT_TRUE(f16_is_nan(fi::f32_to_f16(from_bits(0x7f800001))));  // NaN whose payload f16 cannot hold
  EXPECT_TRUE(f16_is_nan(fi::f32_to_f16(from_bits(0xffc00000))));
}

TEST(Half, F32ToF16Underflow) {
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x38800000)), 0x0400);  // 2^-14 stays normal
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x387fc000)), 0x03ff);  // largest subnormal
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x387fe000)), 0x0400);  // 1023.5 * 2^-24: to even, the smallest normal
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x33800000)), 0x0001);  // 2^-24
  EXPECT_EQ(fi::f32_to_f16(from_bits(0xb3800000)), 0x8001);
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x33c00000)), 0x0002);  // 1.5 * 2^-24: halfway, to even 2
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x34200000)), 0x0002);  // 2.5 * 2^-24: halfway, to even 2
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x33000000)), 0x0000);  // 2^-25: halfway to 0 and 2^-24, to 0
  EXPECT_EQ(fi::f32_to_f16(from_bits(0xb3000000)), 0x8000);
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x33000001)), 0x0001);  // just above 2^-25
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x32800000)), 0x0000);  // 2^-26
  EXPECT_EQ(fi::f32_to_f16(from_bits(0x00000001)), 0x0000);  // fp32 subnormal
}

TEST(Half, F32ToBF16RoundsToNearestEven) {
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x3f800000)), 0x3f80);
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x3f808000)), 0x3f80);  // halfway, to even
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x3f808001)), 0x3f81);
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x3f807fff)), 0x3f80);
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x3f818000)), 0x3f82);  // halfway, to even
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0xbf818000)), 0xbf82);
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x7f7f7fff)), 0x7f7f);  // stays finite
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x7f7f8000)), 0x7f80);  // halfway above the largest (odd): inf
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x7f7fffff)), 0x7f80);  // FLT_MAX: inf
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0xff7fffff)), 0xff80);
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x7f800000)), 0x7f80);
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x00008000)), 0x0000);  // halfway to the smallest subnormal: 0
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x00008001)), 0x0001);
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x00018000)), 0x0002);  // halfway, to even
  EXPECT_EQ(fi::f32_to_bf16(from_bits(0x80004000)), 0x8000);
  EXPECT_TRUE(bf16_is_nan(fi::f32_to_bf16(from_bits(0x7fc00000))));
  EXPECT_TRUE(bf16_is_nan(fi::f32_to_bf16(from_bits(0x7f800001))));  // would round to inf if not caught
  EXPECT_TRUE(bf16_is_nan(fi::f32_to_bf16(from_bits(0xffffffff))));
}

// Every f16 value widened equals the value computed from its fields, and narrows back to itself.
TEST(Half, F16ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t x = uint16_t(h);
    const float f = fi::f16_to_f32(x);
    const uint16_t back = fi::f32_to_f16(f);
    if (f16_is_nan(x)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
      ASSERT_TRUE(f16_is_nan(back)) << std::hex << h;
      continue;
    }
    ASSERT_EQ(back, x) << std::hex << h;
    const int e = (x >> 10) & 0x1f, m = x & 0x3ff;
    double v = e == 31 ? INFINITY : e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
    if (x & 0x8000) v = -v;
    ASSERT_EQ(double(f), v) << std::hex << h;
    ASSERT_EQ(std::signbit(f), bool(x & 0x8000)) << std::hex << h;
  }
}

TEST(Half, BF16ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t x = uint16_t(h);
    const uint16_t back = fi::f32_to_bf16(fi::bf16_to_f32(x));
    if (bf16_is_nan(x)) ASSERT_TRUE(bf16_is_nan(back)) << std::hex << h;
    else ASSERT_EQ(back, x) << std::hex << h;
  }
}

}  // namespace
