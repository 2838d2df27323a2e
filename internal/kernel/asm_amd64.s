//go:build amd64 && !purego

#include "textflag.h"

// ADDSTORE2 adds the two registers of one tile row (columns at 0 and off bytes) to the row
// of C at DI and stores the sums; STORE2 stores them without adding.
#define ADDSTORE2(lo, hi, off) VADDPS (DI), lo, lo; VADDPS off(DI), hi, hi; VMOVUPS lo, (DI); VMOVUPS hi, off(DI)
#define STORE2(lo, hi, off) VMOVUPS lo, (DI); VMOVUPS hi, off(DI)

// func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eaxArg+0(FP), AX
	MOVL ecxArg+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func xgetbv() (eax, edx uint32)
TEXT ·xgetbv(SB), NOSPLIT, $0-8
	MOVL $0, CX
	XGETBV
	MOVL AX, eax+0(FP)
	MOVL DX, edx+4(FP)
	RET

// func kern6x16(kc int, a, b *float32, ldb int, c *float32, ldc int, load bool)
//
// Y4..Y15 hold the tile: row i in Y(4+2i) (columns 0-7) and Y(5+2i) (columns 8-15).
TEXT ·kern6x16(SB), NOSPLIT, $0-49
	MOVQ kc+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ ldb+24(FP), R9
	SHLQ $2, R9
	MOVQ c+32(FP), DI
	MOVQ ldc+40(FP), R8
	SHLQ $2, R8
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15

loop:
	VMOVUPS (DX), Y0
	VMOVUPS 32(DX), Y1
	VBROADCASTSS (SI), Y2
	VBROADCASTSS 4(SI), Y3
	VFMADD231PS Y0, Y2, Y4
	VFMADD231PS Y1, Y2, Y5
	VFMADD231PS Y0, Y3, Y6
	VFMADD231PS Y1, Y3, Y7
	VBROADCASTSS 8(SI), Y2
	VBROADCASTSS 12(SI), Y3
	VFMADD231PS Y0, Y2, Y8
	VFMADD231PS Y1, Y2, Y9
	VFMADD231PS Y0, Y3, Y10
	VFMADD231PS Y1, Y3, Y11
	VBROADCASTSS 16(SI), Y2
	VBROADCASTSS 20(SI), Y3
	VFMADD231PS Y0, Y2, Y12
	VFMADD231PS Y1, Y2, Y13
	VFMADD231PS Y0, Y3, Y14
	VFMADD231PS Y1, Y3, Y15
	ADDQ $24, SI
	ADDQ R9, DX
	DECQ CX
	JNZ loop

	MOVBLZX load+48(FP), AX
	TESTL AX, AX
	JZ store

	ADDSTORE2(Y4, Y5, 32)
	ADDQ R8, DI
	ADDSTORE2(Y6, Y7, 32)
	ADDQ R8, DI
	ADDSTORE2(Y8, Y9, 32)
	ADDQ R8, DI
	ADDSTORE2(Y10, Y11, 32)
	ADDQ R8, DI
	ADDSTORE2(Y12, Y13, 32)
	ADDQ R8, DI
	ADDSTORE2(Y14, Y15, 32)
	VZEROUPPER
	RET

store:
	STORE2(Y4, Y5, 32)
	ADDQ R8, DI
	STORE2(Y6, Y7, 32)
	ADDQ R8, DI
	STORE2(Y8, Y9, 32)
	ADDQ R8, DI
	STORE2(Y10, Y11, 32)
	ADDQ R8, DI
	STORE2(Y12, Y13, 32)
	ADDQ R8, DI
	STORE2(Y14, Y15, 32)
	VZEROUPPER
	RET

// func dotAVX(n int, x, y *float32) float32
TEXT ·dotAVX(SB), NOSPLIT, $0-28
	MOVQ n+0(FP), CX
	MOVQ x+8(FP), SI
	MOVQ y+16(FP), DI
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

loop32:
	CMPQ CX, $32
	JL loop8
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP loop32

loop8:
	CMPQ CX, $8
	JL reduce
	VMOVUPS (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP loop8

reduce:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0

scalar:
	TESTQ CX, CX
	JZ done
	VMOVSS (SI), X1
	VFMADD231SS (DI), X1, X0
	ADDQ $4, SI
	ADDQ $4, DI
	DECQ CX
	JMP scalar

done:
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func scaleShiftAVX(dst, src *float32, n int, a, b float32)
TEXT ·scaleShiftAVX(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS a+24(FP), Y0
	VBROADCASTSS b+28(FP), Y1

ssloop:
	VMOVUPS (SI), Y2
	VFMADD213PS Y1, Y0, Y2
	VMOVUPS Y2, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ ssloop
	VZEROUPPER
	RET

// func scaleShift2AVX(xh, y, x *float32, n int, a, b, gm, c, lo, hi float32)
TEXT ·scaleShift2AVX(SB), NOSPLIT, $0-56
	MOVQ xh+0(FP), DI
	MOVQ y+8(FP), DX
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
	VBROADCASTSS a+32(FP), Y0
	VBROADCASTSS b+36(FP), Y1
	VBROADCASTSS gm+40(FP), Y3
	VBROADCASTSS c+44(FP), Y4
	VBROADCASTSS lo+48(FP), Y5
	VBROADCASTSS hi+52(FP), Y6

ss2loop:
	VMOVUPS (SI), Y2
	VFMADD213PS Y1, Y0, Y2
	VMOVUPS Y2, (DI)
	VFMADD213PS Y4, Y3, Y2
	VMAXPS Y2, Y5, Y2
	VMINPS Y2, Y6, Y2
	VMOVUPS Y2, (DX)
	ADDQ $32, SI
	ADDQ $32, DI
	ADDQ $32, DX
	SUBQ $8, CX
	JNZ ss2loop
	VZEROUPPER
	RET

// func maxPoolArgAVX(dst *float32, idx *int32, r0, r1 *float32, n int, start, w int32, iota *[8]int32) int
//
// Per group of 8 windows: the even and odd columns of both rows (a, b, c, d), their
// maximum m, then the first of a, b, c, d equal to m by three blends, for the value and for
// its offset (0, 1, w, w+1). A group holding a NaN ends the run.
TEXT ·maxPoolArgAVX(SB), NOSPLIT, $0-64
	MOVQ dst+0(FP), DI
	MOVQ idx+8(FP), R8
	MOVQ r0+16(FP), SI
	MOVQ r1+24(FP), DX
	MOVQ n+32(FP), CX
	MOVQ iota+48(FP), AX
	VMOVDQU (AX), Y15
	MOVL start+40(FP), AX
	VMOVD AX, X9
	VPBROADCASTD X9, Y9
	VPADDD Y9, Y15, Y15     // start + 2x
	MOVL $16, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14   // 16: the next group
	MOVL w+44(FP), AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	MOVL $1, AX
	VMOVD AX, X11
	VPBROADCASTD X11, Y11   // 1
	VPADDD Y11, Y13, Y12    // w+1
	VPXOR Y10, Y10, Y10     // 0
	XORQ BX, BX

mploop:
	CMPQ BX, CX
	JGE mpdone
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VSHUFPS $0x88, Y1, Y0, Y2
	VSHUFPS $0xDD, Y1, Y0, Y3
	VPERMPD $0xD8, Y2, Y2   // a
	VPERMPD $0xD8, Y3, Y3   // b
	VMOVUPS (DX), Y0
	VMOVUPS 32(DX), Y1
	VSHUFPS $0x88, Y1, Y0, Y4
	VSHUFPS $0xDD, Y1, Y0, Y5
	VPERMPD $0xD8, Y4, Y4   // c
	VPERMPD $0xD8, Y5, Y5   // d
	VCMPPS $3, Y3, Y2, Y6
	VCMPPS $3, Y5, Y4, Y7
	VORPS Y7, Y6, Y6
	VMOVMSKPS Y6, AX
	TESTL AX, AX
	JNZ mpdone
	VMAXPS Y3, Y2, Y6
	VMAXPS Y5, Y4, Y7
	VMAXPS Y7, Y6, Y6       // m
	VCMPPS $0, Y6, Y2, Y7   // a == m
	VCMPPS $0, Y6, Y3, Y8   // b == m
	VCMPPS $0, Y6, Y4, Y9   // c == m
	VBLENDVPS Y9, Y4, Y5, Y0
	VBLENDVPS Y8, Y3, Y0, Y0
	VBLENDVPS Y7, Y2, Y0, Y0
	VMOVUPS Y0, (DI)
	VBLENDVPS Y9, Y13, Y12, Y1
	VBLENDVPS Y8, Y11, Y1, Y1
	VBLENDVPS Y7, Y10, Y1, Y1
	VPADDD Y15, Y1, Y1
	VMOVDQU Y1, (R8)
	VPADDD Y14, Y15, Y15
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $32, DI
	ADDQ $32, R8
	ADDQ $8, BX
	JMP mploop

mpdone:
	MOVQ BX, ret+56(FP)
	VZEROUPPER
	RET

// func clampAVX(dst, src *float32, n int, lo, hi float32)
//
// VMAXPS and VMINPS return their second source when either is NaN: with the data as second
// source, NaN passes through.
TEXT ·clampAVX(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS lo+24(FP), Y0
	VBROADCASTSS hi+28(FP), Y1

clloop:
	VMOVUPS (SI), Y2
	VMAXPS Y2, Y0, Y2
	VMINPS Y2, Y1, Y2
	VMOVUPS Y2, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ clloop
	VZEROUPPER
	RET

// func addAVX(dst, x, y *float32, n int)
TEXT ·addAVX(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ y+16(FP), DX
	MOVQ n+24(FP), CX

addloop:
	VMOVUPS (SI), Y0
	VADDPS (DX), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ addloop
	VZEROUPPER
	RET

// func copyRowsAVX(dst *float32, stride int, src *float32, offs *int, rows, n int)
//
// Rows of 16 values take two 32-byte moves; 8 to 15 values two overlapping 32-byte moves
// (the first and the last 8); 4 to 7 values two overlapping 16-byte moves.
TEXT ·copyRowsAVX(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ stride+8(FP), R8
	SHLQ $2, R8
	MOVQ src+16(FP), SI
	MOVQ offs+24(FP), BX
	MOVQ rows+32(FP), CX
	MOVQ n+40(FP), DX
	LEAQ -32(DX*4), R9 // byte offset of the last 8 values
	LEAQ -16(DX*4), R10 // byte offset of the last 4 values
	CMPQ DX, $8
	JLT cr4

cr8:
	MOVQ (BX), AX
	LEAQ (SI)(AX*4), AX
	VMOVUPS (AX), Y0
	VMOVUPS (AX)(R9*1), Y1
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, (DI)(R9*1)
	ADDQ $8, BX
	ADDQ R8, DI
	DECQ CX
	JNZ cr8
	VZEROUPPER
	RET

cr4:
	MOVQ (BX), AX
	LEAQ (SI)(AX*4), AX
	MOVUPS (AX), X0
	MOVUPS (AX)(R10*1), X1
	MOVUPS X0, (DI)
	MOVUPS X1, (DI)(R10*1)
	ADDQ $8, BX
	ADDQ R8, DI
	DECQ CX
	JNZ cr4
	RET

// Eight all-ones lanes then eight zero lanes: the 32 bytes at offset 4*(8-n) enable the
// first n lanes of a masked store.
DATA lanes<>+0(SB)/8, $0xffffffffffffffff
DATA lanes<>+8(SB)/8, $0xffffffffffffffff
DATA lanes<>+16(SB)/8, $0xffffffffffffffff
DATA lanes<>+24(SB)/8, $0xffffffffffffffff
DATA lanes<>+32(SB)/8, $0
DATA lanes<>+40(SB)/8, $0
DATA lanes<>+48(SB)/8, $0
DATA lanes<>+56(SB)/8, $0
GLOBL lanes<>(SB), RODATA|NOPTR, $64

// func depthwise3x3AVX(dst, x *float32, w *[9]float32, bias float32, oh, ow, pw int, lo, hi float32)
//
// Y0-Y8 hold the broadcast weights, Y9 the bias, Y12 and Y13 the clamp. Each step computes 8
// outputs of a row; the last step of a row stores only the remaining lanes.
TEXT ·depthwise3x3AVX(SB), NOSPLIT, $0-64
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ w+16(FP), AX
	VBROADCASTSS 0(AX), Y0
	VBROADCASTSS 4(AX), Y1
	VBROADCASTSS 8(AX), Y2
	VBROADCASTSS 12(AX), Y3
	VBROADCASTSS 16(AX), Y4
	VBROADCASTSS 20(AX), Y5
	VBROADCASTSS 24(AX), Y6
	VBROADCASTSS 28(AX), Y7
	VBROADCASTSS 32(AX), Y8
	VBROADCASTSS bias+24(FP), Y9
	VBROADCASTSS lo+56(FP), Y12
	VBROADCASTSS hi+60(FP), Y13
	MOVQ oh+32(FP), R8
	MOVQ ow+40(FP), R9
	MOVQ pw+48(FP), R10
	SHLQ $2, R10 // row stride in bytes

dwrow:
	MOVQ SI, R11      // r0
	LEAQ (SI)(R10*1), R12 // r1
	LEAQ (R12)(R10*1), R13 // r2
	MOVQ R9, CX       // outputs left in the row

dwstep:
	VMOVAPS Y9, Y10
	VFMADD231PS (R11), Y0, Y10
	VFMADD231PS 4(R11), Y1, Y10
	VFMADD231PS 8(R11), Y2, Y10
	VFMADD231PS (R12), Y3, Y10
	VFMADD231PS 4(R12), Y4, Y10
	VFMADD231PS 8(R12), Y5, Y10
	VFMADD231PS (R13), Y6, Y10
	VFMADD231PS 4(R13), Y7, Y10
	VFMADD231PS 8(R13), Y8, Y10
	VMAXPS Y10, Y12, Y10
	VMINPS Y10, Y13, Y10
	CMPQ CX, $8
	JLT dwtail
	VMOVUPS Y10, (DI)
	ADDQ $32, DI
	ADDQ $32, R11
	ADDQ $32, R12
	ADDQ $32, R13
	SUBQ $8, CX
	JNZ dwstep
	JMP dwnext

dwtail:
	// CX < 8 outputs left in the row. A masked store is slow on some cores (AMD's take tens
	// of cycles): when the rows below hold the 8-CX values past the row's end, the full
	// vector is stored (those rows are written after this one); on the last row, a row of
	// 8 or more stores its last 8 outputs again, overlapping the ones before; only a short
	// last row is stored through the mask.
	MOVQ $8, DX
	SUBQ CX, DX       // lanes past the row's end
	MOVQ R8, AX
	DECQ AX
	IMULQ R9, AX      // values in the rows below
	CMPQ AX, DX
	JLT dwlast
	VMOVUPS Y10, (DI)
	LEAQ (DI)(CX*4), DI
	JMP dwnext

dwlast:
	CMPQ R9, $8
	JLT dwmask
	SHLQ $2, DX
	SUBQ DX, DI
	SUBQ DX, R11
	SUBQ DX, R12
	SUBQ DX, R13
	VMOVAPS Y9, Y10
	VFMADD231PS (R11), Y0, Y10
	VFMADD231PS 4(R11), Y1, Y10
	VFMADD231PS 8(R11), Y2, Y10
	VFMADD231PS (R12), Y3, Y10
	VFMADD231PS 4(R12), Y4, Y10
	VFMADD231PS 8(R12), Y5, Y10
	VFMADD231PS (R13), Y6, Y10
	VFMADD231PS 4(R13), Y7, Y10
	VFMADD231PS 8(R13), Y8, Y10
	VMAXPS Y10, Y12, Y10
	VMINPS Y10, Y13, Y10
	VMOVUPS Y10, (DI)
	ADDQ $32, DI
	JMP dwnext

dwmask:
	LEAQ lanes<>(SB), AX
	VMOVUPS (AX)(DX*4), Y11
	VMASKMOVPS Y10, Y11, (DI)
	LEAQ (DI)(CX*4), DI

dwnext:
	ADDQ R10, SI
	DECQ R8
	JNZ dwrow
	VZEROUPPER
	RET

// func transpose6x8AVX(dst, src *float32, lds, blocks int)
//
// transpose8x8AVX's network over six rows and two zero ones. Column p of a block goes to
// dst+6p as a full vector, whose last two lanes the next column's store overwrites; the
// last column stores only its six values, so nothing is written past the block.
TEXT ·transpose6x8AVX(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ lds+16(FP), R9
	SHLQ $2, R9
	MOVQ blocks+24(FP), CX
	LEAQ (R9)(R9*2), R10 // 3 rows
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7

t6loop:
	MOVQ SI, DX
	VMOVUPS (DX), Y0
	VMOVUPS (DX)(R9*1), Y1
	VMOVUPS (DX)(R9*2), Y2
	VMOVUPS (DX)(R10*1), Y3
	LEAQ (DX)(R9*4), DX
	VMOVUPS (DX), Y4
	VMOVUPS (DX)(R9*1), Y5

	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15

	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y8
	VSHUFPS $0xEE, Y15, Y13, Y9

	VPERM2F128 $0x20, Y4, Y0, Y10
	VPERM2F128 $0x20, Y5, Y1, Y11
	VPERM2F128 $0x20, Y8, Y2, Y12
	VPERM2F128 $0x20, Y9, Y3, Y13
	VMOVUPS Y10, (DI)
	VMOVUPS Y11, 24(DI)
	VMOVUPS Y12, 48(DI)
	VMOVUPS Y13, 72(DI)
	VPERM2F128 $0x31, Y4, Y0, Y10
	VPERM2F128 $0x31, Y5, Y1, Y11
	VPERM2F128 $0x31, Y8, Y2, Y12
	VPERM2F128 $0x31, Y9, Y3, Y13
	VMOVUPS Y10, 96(DI)
	VMOVUPS Y11, 120(DI)
	VMOVUPS Y12, 144(DI)
	VMOVUPS X13, 168(DI)
	VEXTRACTF128 $1, Y13, X13
	MOVQ X13, 184(DI)

	ADDQ $32, SI
	ADDQ $192, DI
	DECQ CX
	JNZ t6loop
	VZEROUPPER
	RET

// func dots2x4AVX(n int, a *float32, lda int, b *float32, ldb int, acc *[64]float32)
//
// Sets acc[8*(4i+j) : 8*(4i+j)+8] to the eight lane sums of a[i*lda+p]*b[j*ldb+p] over
// p < n (n a positive multiple of 8), for i < 2 and j < 4; the caller adds the lanes.
// Y8..Y15 hold the eight accumulators.
TEXT ·dots2x4AVX(SB), NOSPLIT, $0-48
	MOVQ n+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R10
	SHLQ $2, R10
	ADDQ SI, R10
	MOVQ b+24(FP), DI
	MOVQ ldb+32(FP), R9
	SHLQ $2, R9
	LEAQ (DI)(R9*1), R11
	LEAQ (R11)(R9*1), R12
	LEAQ (R12)(R9*1), R13
	MOVQ acc+40(FP), AX
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15

dots:
	VMOVUPS (SI), Y0
	VMOVUPS (R10), Y1
	VMOVUPS (DI), Y2
	VMOVUPS (R11), Y3
	VFMADD231PS Y0, Y2, Y8
	VFMADD231PS Y0, Y3, Y9
	VFMADD231PS Y1, Y2, Y12
	VFMADD231PS Y1, Y3, Y13
	VMOVUPS (R12), Y2
	VMOVUPS (R13), Y3
	VFMADD231PS Y0, Y2, Y10
	VFMADD231PS Y0, Y3, Y11
	VFMADD231PS Y1, Y2, Y14
	VFMADD231PS Y1, Y3, Y15
	ADDQ $32, SI
	ADDQ $32, R10
	ADDQ $32, DI
	ADDQ $32, R11
	ADDQ $32, R12
	ADDQ $32, R13
	SUBQ $8, CX
	JNZ dots

	VMOVUPS Y8, (AX)
	VMOVUPS Y9, 32(AX)
	VMOVUPS Y10, 64(AX)
	VMOVUPS Y11, 96(AX)
	VMOVUPS Y12, 128(AX)
	VMOVUPS Y13, 160(AX)
	VMOVUPS Y14, 192(AX)
	VMOVUPS Y15, 224(AX)
	VZEROUPPER
	RET

// func reluGradAVX(dx, x, dy *float32, n int, top float32)
TEXT ·reluGradAVX(SB), NOSPLIT, $0-36
	MOVQ dx+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ dy+16(FP), DX
	MOVQ n+24(FP), CX
	VXORPS Y0, Y0, Y0
	VBROADCASTSS top+32(FP), Y1

rgloop:
	VMOVUPS (SI), Y2
	VCMPPS $0x1e, Y0, Y2, Y3
	VCMPPS $0x11, Y1, Y2, Y4
	VANDPS Y4, Y3, Y3
	VANDPS (DX), Y3, Y3
	VMOVUPS Y3, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ rgloop
	VZEROUPPER
	RET

// func transpose8x8AVX(dst *float32, ldd int, src *float32, lds int, blocks int)
//
// For b < blocks, writes the transpose of the 8 x 8 block at src + 8b (rows lds values
// apart) to dst + 8b*ldd (rows ldd values apart): dst[(8b+p)*ldd + j] = src[j*lds + 8b + p].
TEXT ·transpose8x8AVX(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ ldd+8(FP), R8
	SHLQ $2, R8
	MOVQ src+16(FP), SI
	MOVQ lds+24(FP), R9
	SHLQ $2, R9
	MOVQ blocks+32(FP), CX
	LEAQ (R9)(R9*2), R10 // 3 rows
	LEAQ (R8)(R8*2), R11

tloop:
	MOVQ SI, DX
	VMOVUPS (DX), Y0
	VMOVUPS (DX)(R9*1), Y1
	VMOVUPS (DX)(R9*2), Y2
	VMOVUPS (DX)(R10*1), Y3
	LEAQ (DX)(R9*4), DX
	VMOVUPS (DX), Y4
	VMOVUPS (DX)(R9*1), Y5
	VMOVUPS (DX)(R9*2), Y6
	VMOVUPS (DX)(R10*1), Y7

	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15

	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7

	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x31, Y7, Y3, Y15

	MOVQ DI, DX
	VMOVUPS Y8, (DX)
	VMOVUPS Y9, (DX)(R8*1)
	VMOVUPS Y10, (DX)(R8*2)
	VMOVUPS Y11, (DX)(R11*1)
	LEAQ (DX)(R8*4), DX
	VMOVUPS Y12, (DX)
	VMOVUPS Y13, (DX)(R8*1)
	VMOVUPS Y14, (DX)(R8*2)
	VMOVUPS Y15, (DX)(R11*1)

	ADDQ $32, SI
	LEAQ (DI)(R8*8), DI
	DECQ CX
	JNZ tloop
	VZEROUPPER
	RET

// func maxPool2x2AVX(dst, r0, r1 *float32, n int)
//
// dst[x] = max(r0[2x], r0[2x+1], r1[2x], r1[2x+1]) for x < n, n a multiple of 4; NaN
// wins (VMAXPS alone would drop a NaN in its first operand, so unordered lanes are set).
TEXT ·maxPool2x2AVX(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ r0+8(FP), SI
	MOVQ r1+16(FP), DX
	MOVQ n+24(FP), CX

mp8:
	CMPQ CX, $8
	JL mp4
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS (DX), Y2
	VMOVUPS 32(DX), Y3
	VMAXPS Y2, Y0, Y4
	VCMPPS $3, Y2, Y0, Y6
	VORPS Y6, Y4, Y4
	VMAXPS Y3, Y1, Y5
	VCMPPS $3, Y3, Y1, Y7
	VORPS Y7, Y5, Y5
	VSHUFPS $0x88, Y5, Y4, Y0
	VSHUFPS $0xDD, Y5, Y4, Y1
	VMAXPS Y1, Y0, Y2
	VCMPPS $3, Y1, Y0, Y3
	VORPS Y3, Y2, Y2
	VPERMPD $0xD8, Y2, Y2
	VMOVUPS Y2, (DI)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $32, DI
	SUBQ $8, CX
	JMP mp8

mp4:
	TESTQ CX, CX
	JZ mpdone
	VMOVUPS (SI), X0
	VMOVUPS 16(SI), X1
	VMOVUPS (DX), X2
	VMOVUPS 16(DX), X3
	VMAXPS X2, X0, X4
	VCMPPS $3, X2, X0, X6
	VORPS X6, X4, X4
	VMAXPS X3, X1, X5
	VCMPPS $3, X3, X1, X7
	VORPS X7, X5, X5
	VSHUFPS $0x88, X5, X4, X0
	VSHUFPS $0xDD, X5, X4, X1
	VMAXPS X1, X0, X2
	VCMPPS $3, X1, X0, X3
	VORPS X3, X2, X2
	VMOVUPS X2, (DI)

mpdone:
	VZEROUPPER
	RET

// func sumDev64AVX(x *float32, n int, c float64, out *[2]float64)
//
// out[0] = sum of (x[i]-c), out[1] = sum of (x[i]-c)^2, in float64, for n a positive
// multiple of 8; four float64 lanes in each of two accumulators per sum, added at the end.
TEXT ·sumDev64AVX(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSD c+16(FP), Y15
	MOVQ out+24(FP), DI
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3

sdloop:
	VCVTPS2PD (SI), Y4
	VCVTPS2PD 16(SI), Y5
	VSUBPD Y15, Y4, Y4
	VSUBPD Y15, Y5, Y5
	VADDPD Y4, Y0, Y0
	VADDPD Y5, Y1, Y1
	VFMADD231PD Y4, Y4, Y2
	VFMADD231PD Y5, Y5, Y3
	ADDQ $32, SI
	SUBQ $8, CX
	JNZ sdloop

	VADDPD Y1, Y0, Y0
	VADDPD Y3, Y2, Y2
	VEXTRACTF128 $1, Y0, X1
	VADDPD X1, X0, X0
	VHADDPD X0, X0, X0
	VMOVSD X0, (DI)
	VEXTRACTF128 $1, Y2, X3
	VADDPD X3, X2, X2
	VHADDPD X2, X2, X2
	VMOVSD X2, 8(DI)
	VZEROUPPER
	RET

// func sumDot64AVX(x, y *float32, n int, out *[2]float64)
//
// out[0] = sum of x[i], out[1] = sum of x[i]*y[i], in float64, for n a positive multiple
// of 8.
TEXT ·sumDot64AVX(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DX
	MOVQ n+16(FP), CX
	MOVQ out+24(FP), DI
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3

sxloop:
	VCVTPS2PD (SI), Y4
	VCVTPS2PD 16(SI), Y5
	VCVTPS2PD (DX), Y6
	VCVTPS2PD 16(DX), Y7
	VADDPD Y4, Y0, Y0
	VADDPD Y5, Y1, Y1
	VFMADD231PD Y4, Y6, Y2
	VFMADD231PD Y5, Y7, Y3
	ADDQ $32, SI
	ADDQ $32, DX
	SUBQ $8, CX
	JNZ sxloop

	VADDPD Y1, Y0, Y0
	VADDPD Y3, Y2, Y2
	VEXTRACTF128 $1, Y0, X1
	VADDPD X1, X0, X0
	VHADDPD X0, X0, X0
	VMOVSD X0, (DI)
	VEXTRACTF128 $1, Y2, X3
	VADDPD X3, X2, X2
	VHADDPD X2, X2, X2
	VMOVSD X2, 8(DI)
	VZEROUPPER
	RET

// func axpbyAVX(dst, x, y *float32, n int, a, b, c float32)
//
// dst[i] = a*x[i] + (b*y[i] + c) for n a multiple of 8.
TEXT ·axpbyAVX(SB), NOSPLIT, $0-44
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ y+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS a+32(FP), Y0
	VBROADCASTSS b+36(FP), Y1
	VBROADCASTSS c+40(FP), Y2

abloop:
	VMOVUPS (DX), Y3
	VMOVAPS Y2, Y4
	VFMADD231PS Y3, Y1, Y4
	VMOVUPS (SI), Y5
	VFMADD231PS Y5, Y0, Y4
	VMOVUPS Y4, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ abloop
	VZEROUPPER
	RET

// func adamAVX(w, grad, m, v *float32, n int, p *AdamParams)
//
// Every product and sum rounded separately, in the order of Adam's scalar loop.
TEXT ·adamAVX(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), DI
	MOVQ grad+8(FP), SI
	MOVQ m+16(FP), DX
	MOVQ v+24(FP), R8
	MOVQ n+32(FP), CX
	MOVQ p+40(FP), AX
	VBROADCASTSS 0(AX), Y8   // B1
	VBROADCASTSS 4(AX), Y9   // NB1
	VBROADCASTSS 8(AX), Y10  // B2
	VBROADCASTSS 12(AX), Y11 // NB2
	VBROADCASTSS 16(AX), Y12 // LR
	VBROADCASTSS 20(AX), Y13 // Decay
	VBROADCASTSS 24(AX), Y14 // C1
	VBROADCASTSS 28(AX), Y15 // C2
	VBROADCASTSS 32(AX), Y7  // Eps

adloop:
	VMOVUPS (DI), Y0
	VMULPS Y0, Y13, Y1
	VADDPS (SI), Y1, Y1     // g' = g + Decay*w
	VMULPS (DX), Y8, Y2
	VMULPS Y1, Y9, Y3
	VADDPS Y3, Y2, Y2       // m
	VMULPS (R8), Y10, Y3
	VMULPS Y1, Y11, Y4
	VMULPS Y1, Y4, Y4
	VADDPS Y4, Y3, Y3       // v
	VMOVUPS Y2, (DX)
	VMOVUPS Y3, (R8)
	VMULPS Y14, Y2, Y4
	VMULPS Y4, Y12, Y4      // LR*(m*C1)
	VMULPS Y15, Y3, Y5
	VSQRTPS Y5, Y5
	VADDPS Y7, Y5, Y5       // sqrt(v*C2) + Eps
	VDIVPS Y5, Y4, Y4
	VSUBPS Y4, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, R8
	SUBQ $8, CX
	JNZ adloop
	VZEROUPPER
	RET

// func kern6x16Rows(kc int, a, b *float32, offs *int, c *float32, ldc int, load bool)
//
// kern6x16 with row p of b at b+offs[p] (in values) instead of b+p*ldb.
TEXT ·kern6x16Rows(SB), NOSPLIT, $0-49
	MOVQ kc+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ offs+24(FP), R9
	MOVQ c+32(FP), DI
	MOVQ ldc+40(FP), R8
	SHLQ $2, R8
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15

rloop:
	MOVQ (R9), R10
	VMOVUPS (DX)(R10*4), Y0
	VMOVUPS 32(DX)(R10*4), Y1
	VBROADCASTSS (SI), Y2
	VBROADCASTSS 4(SI), Y3
	VFMADD231PS Y0, Y2, Y4
	VFMADD231PS Y1, Y2, Y5
	VFMADD231PS Y0, Y3, Y6
	VFMADD231PS Y1, Y3, Y7
	VBROADCASTSS 8(SI), Y2
	VBROADCASTSS 12(SI), Y3
	VFMADD231PS Y0, Y2, Y8
	VFMADD231PS Y1, Y2, Y9
	VFMADD231PS Y0, Y3, Y10
	VFMADD231PS Y1, Y3, Y11
	VBROADCASTSS 16(SI), Y2
	VBROADCASTSS 20(SI), Y3
	VFMADD231PS Y0, Y2, Y12
	VFMADD231PS Y1, Y2, Y13
	VFMADD231PS Y0, Y3, Y14
	VFMADD231PS Y1, Y3, Y15
	ADDQ $24, SI
	ADDQ $8, R9
	DECQ CX
	JNZ rloop

	MOVBLZX load+48(FP), AX
	TESTL AX, AX
	JZ rstore

	ADDSTORE2(Y4, Y5, 32)
	ADDQ R8, DI
	ADDSTORE2(Y6, Y7, 32)
	ADDQ R8, DI
	ADDSTORE2(Y8, Y9, 32)
	ADDQ R8, DI
	ADDSTORE2(Y10, Y11, 32)
	ADDQ R8, DI
	ADDSTORE2(Y12, Y13, 32)
	ADDQ R8, DI
	ADDSTORE2(Y14, Y15, 32)
	VZEROUPPER
	RET

rstore:
	STORE2(Y4, Y5, 32)
	ADDQ R8, DI
	STORE2(Y6, Y7, 32)
	ADDQ R8, DI
	STORE2(Y8, Y9, 32)
	ADDQ R8, DI
	STORE2(Y10, Y11, 32)
	ADDQ R8, DI
	STORE2(Y12, Y13, 32)
	ADDQ R8, DI
	STORE2(Y14, Y15, 32)
	VZEROUPPER
	RET

// func stridedRowsAVX(dst *float32, ldd int, src *float32, lds int, rows, n int, b *float32, bs int, lo, hi float32)
//
// Rows of 8 values or more go in blocks of 8 and a last block of 8 that overlaps the one
// before; rows of 4 to 7 values in two overlapping 16-byte blocks. The clamp takes the data
// as second source of VMAXPS and VMINPS, so that NaN passes through (as in clampAVX).
TEXT ·stridedRowsAVX(SB), NOSPLIT, $0-72
	MOVQ dst+0(FP), DI
	MOVQ ldd+8(FP), R8
	SHLQ $2, R8
	MOVQ src+16(FP), SI
	MOVQ lds+24(FP), R9
	SHLQ $2, R9
	MOVQ rows+32(FP), CX
	MOVQ n+40(FP), DX
	MOVQ b+48(FP), R11
	MOVQ bs+56(FP), R12
	SHLQ $2, R12
	VBROADCASTSS lo+64(FP), Y2
	VBROADCASTSS hi+68(FP), Y3
	CMPQ DX, $8
	JLT srshort
	LEAQ -32(DX*4), R10

srrow:
	VBROADCASTSS (R11), Y1
	XORQ AX, AX

srblock:
	CMPQ AX, R10
	JGE srlast
	VADDPS (SI)(AX*1), Y1, Y0
	VMAXPS Y0, Y2, Y0
	VMINPS Y0, Y3, Y0
	VMOVUPS Y0, (DI)(AX*1)
	ADDQ $32, AX
	JMP srblock

srlast:
	VADDPS (SI)(R10*1), Y1, Y0
	VMAXPS Y0, Y2, Y0
	VMINPS Y0, Y3, Y0
	VMOVUPS Y0, (DI)(R10*1)
	ADDQ R9, SI
	ADDQ R8, DI
	ADDQ R12, R11
	DECQ CX
	JNZ srrow
	VZEROUPPER
	RET

srshort:
	LEAQ -16(DX*4), R10

srsrow:
	VBROADCASTSS (R11), X1
	VADDPS (SI), X1, X0
	VMAXPS X0, X2, X0
	VMINPS X0, X3, X0
	VMOVUPS X0, (DI)
	VADDPS (SI)(R10*1), X1, X0
	VMAXPS X0, X2, X0
	VMINPS X0, X3, X0
	VMOVUPS X0, (DI)(R10*1)
	ADDQ R9, SI
	ADDQ R8, DI
	ADDQ R12, R11
	DECQ CX
	JNZ srsrow
	VZEROUPPER
	RET

// func deinterleaveAVX(even, odd, src *float32, n int)
//
// Blocks of 16 values of src, then a last block that overlaps the one before: VSHUFPS picks
// the even (or odd) values of each 128-bit lane of two registers, VPERMPD puts the 64-bit
// pairs back in order.
TEXT ·deinterleaveAVX(SB), NOSPLIT, $0-32
	MOVQ even+0(FP), DI
	MOVQ odd+8(FP), DX
	MOVQ src+16(FP), SI
	MOVQ n+24(FP), CX
	LEAQ -32(CX*4), R10
	XORQ AX, AX

diblock:
	CMPQ AX, R10
	JGE dilast
	VMOVUPS (SI)(AX*2), Y0
	VMOVUPS 32(SI)(AX*2), Y1
	VSHUFPS $0x88, Y1, Y0, Y2
	VSHUFPS $0xDD, Y1, Y0, Y3
	VPERMPD $0xD8, Y2, Y2
	VPERMPD $0xD8, Y3, Y3
	VMOVUPS Y2, (DI)(AX*1)
	VMOVUPS Y3, (DX)(AX*1)
	ADDQ $32, AX
	JMP diblock

dilast:
	VMOVUPS (SI)(R10*2), Y0
	VMOVUPS 32(SI)(R10*2), Y1
	VSHUFPS $0x88, Y1, Y0, Y2
	VSHUFPS $0xDD, Y1, Y0, Y3
	VPERMPD $0xD8, Y2, Y2
	VPERMPD $0xD8, Y3, Y3
	VMOVUPS Y2, (DI)(R10*1)
	VMOVUPS Y3, (DX)(R10*1)
	VZEROUPPER
	RET

// func kern8x32(kc int, a, b *float32, ldb int, c *float32, ldc int, load bool)
//
// Z4..Z19 hold an 8 x 32 tile: row i in Z(4+2i) (columns 0-15) and Z(5+2i) (16-31).
TEXT ·kern8x32(SB), NOSPLIT, $0-49
	MOVQ kc+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ ldb+24(FP), R9
	SHLQ $2, R9
	MOVQ c+32(FP), DI
	MOVQ ldc+40(FP), R8
	SHLQ $2, R8
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19

kern8x32loop:
	VMOVUPS (DX), Z0
	VMOVUPS 64(DX), Z1
	VBROADCASTSS 0(SI), Z2
	VBROADCASTSS 4(SI), Z3
	VFMADD231PS Z0, Z2, Z4
	VFMADD231PS Z1, Z2, Z5
	VFMADD231PS Z0, Z3, Z6
	VFMADD231PS Z1, Z3, Z7
	VBROADCASTSS 8(SI), Z2
	VBROADCASTSS 12(SI), Z3
	VFMADD231PS Z0, Z2, Z8
	VFMADD231PS Z1, Z2, Z9
	VFMADD231PS Z0, Z3, Z10
	VFMADD231PS Z1, Z3, Z11
	VBROADCASTSS 16(SI), Z2
	VBROADCASTSS 20(SI), Z3
	VFMADD231PS Z0, Z2, Z12
	VFMADD231PS Z1, Z2, Z13
	VFMADD231PS Z0, Z3, Z14
	VFMADD231PS Z1, Z3, Z15
	VBROADCASTSS 24(SI), Z2
	VBROADCASTSS 28(SI), Z3
	VFMADD231PS Z0, Z2, Z16
	VFMADD231PS Z1, Z2, Z17
	VFMADD231PS Z0, Z3, Z18
	VFMADD231PS Z1, Z3, Z19
	ADDQ $32, SI
	ADDQ R9, DX
	DECQ CX
	JNZ kern8x32loop

	MOVBLZX load+48(FP), AX
	TESTL AX, AX
	JZ kern8x32store

	ADDSTORE2(Z4, Z5, 64)
	ADDQ R8, DI
	ADDSTORE2(Z6, Z7, 64)
	ADDQ R8, DI
	ADDSTORE2(Z8, Z9, 64)
	ADDQ R8, DI
	ADDSTORE2(Z10, Z11, 64)
	ADDQ R8, DI
	ADDSTORE2(Z12, Z13, 64)
	ADDQ R8, DI
	ADDSTORE2(Z14, Z15, 64)
	ADDQ R8, DI
	ADDSTORE2(Z16, Z17, 64)
	ADDQ R8, DI
	ADDSTORE2(Z18, Z19, 64)
	VZEROUPPER
	RET

kern8x32store:
	STORE2(Z4, Z5, 64)
	ADDQ R8, DI
	STORE2(Z6, Z7, 64)
	ADDQ R8, DI
	STORE2(Z8, Z9, 64)
	ADDQ R8, DI
	STORE2(Z10, Z11, 64)
	ADDQ R8, DI
	STORE2(Z12, Z13, 64)
	ADDQ R8, DI
	STORE2(Z14, Z15, 64)
	ADDQ R8, DI
	STORE2(Z16, Z17, 64)
	ADDQ R8, DI
	STORE2(Z18, Z19, 64)
	VZEROUPPER
	RET

// func kern8x32Rows(kc int, a, b *float32, offs *int, c *float32, ldc int, load bool)
//
// kern8x32 with row p of b at b+offs[p] (in values) instead of b+p*ldb.
TEXT ·kern8x32Rows(SB), NOSPLIT, $0-49
	MOVQ kc+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ offs+24(FP), R9
	MOVQ c+32(FP), DI
	MOVQ ldc+40(FP), R8
	SHLQ $2, R8
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19

kern8x32Rowsloop:
	MOVQ (R9), R10
	VMOVUPS (DX)(R10*4), Z0
	VMOVUPS 64(DX)(R10*4), Z1
	VBROADCASTSS 0(SI), Z2
	VBROADCASTSS 4(SI), Z3
	VFMADD231PS Z0, Z2, Z4
	VFMADD231PS Z1, Z2, Z5
	VFMADD231PS Z0, Z3, Z6
	VFMADD231PS Z1, Z3, Z7
	VBROADCASTSS 8(SI), Z2
	VBROADCASTSS 12(SI), Z3
	VFMADD231PS Z0, Z2, Z8
	VFMADD231PS Z1, Z2, Z9
	VFMADD231PS Z0, Z3, Z10
	VFMADD231PS Z1, Z3, Z11
	VBROADCASTSS 16(SI), Z2
	VBROADCASTSS 20(SI), Z3
	VFMADD231PS Z0, Z2, Z12
	VFMADD231PS Z1, Z2, Z13
	VFMADD231PS Z0, Z3, Z14
	VFMADD231PS Z1, Z3, Z15
	VBROADCASTSS 24(SI), Z2
	VBROADCASTSS 28(SI), Z3
	VFMADD231PS Z0, Z2, Z16
	VFMADD231PS Z1, Z2, Z17
	VFMADD231PS Z0, Z3, Z18
	VFMADD231PS Z1, Z3, Z19
	ADDQ $32, SI
	ADDQ $8, R9
	DECQ CX
	JNZ kern8x32Rowsloop

	MOVBLZX load+48(FP), AX
	TESTL AX, AX
	JZ kern8x32Rowsstore

	ADDSTORE2(Z4, Z5, 64)
	ADDQ R8, DI
	ADDSTORE2(Z6, Z7, 64)
	ADDQ R8, DI
	ADDSTORE2(Z8, Z9, 64)
	ADDQ R8, DI
	ADDSTORE2(Z10, Z11, 64)
	ADDQ R8, DI
	ADDSTORE2(Z12, Z13, 64)
	ADDQ R8, DI
	ADDSTORE2(Z14, Z15, 64)
	ADDQ R8, DI
	ADDSTORE2(Z16, Z17, 64)
	ADDQ R8, DI
	ADDSTORE2(Z18, Z19, 64)
	VZEROUPPER
	RET

kern8x32Rowsstore:
	STORE2(Z4, Z5, 64)
	ADDQ R8, DI
	STORE2(Z6, Z7, 64)
	ADDQ R8, DI
	STORE2(Z8, Z9, 64)
	ADDQ R8, DI
	STORE2(Z10, Z11, 64)
	ADDQ R8, DI
	STORE2(Z12, Z13, 64)
	ADDQ R8, DI
	STORE2(Z14, Z15, 64)
	ADDQ R8, DI
	STORE2(Z16, Z17, 64)
	ADDQ R8, DI
	STORE2(Z18, Z19, 64)
	VZEROUPPER
	RET

// func depthwise3x3s2AVX(dst, x *float32, pl, q, ld int, w *[9]float32, bias float32, oh, ow int, lo, hi float32)
//
// depthwise3x3AVX over the four phases of the input, at x, x+pl, x+q and x+pl+q: output
// row y reads phases 0 and 1 at row y (kernel row 0), phases 2 and 3 at row y (kernel row
// 1) and phases 0 and 1 at row y+1 (kernel row 2); in each, kernel columns 0, 1 and 2 are
// the even phase at x, the odd phase at x and the even phase at x+1. R11-R14, AX and DX
// point at those six rows.
TEXT ·depthwise3x3s2AVX(SB), NOSPLIT, $0-80
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ pl+16(FP), BX
	SHLQ $2, BX
	MOVQ ld+32(FP), R10
	SHLQ $2, R10
	MOVQ w+40(FP), AX
	VBROADCASTSS 0(AX), Y0
	VBROADCASTSS 4(AX), Y1
	VBROADCASTSS 8(AX), Y2
	VBROADCASTSS 12(AX), Y3
	VBROADCASTSS 16(AX), Y4
	VBROADCASTSS 20(AX), Y5
	VBROADCASTSS 24(AX), Y6
	VBROADCASTSS 28(AX), Y7
	VBROADCASTSS 32(AX), Y8
	VBROADCASTSS bias+48(FP), Y9
	VBROADCASTSS lo+72(FP), Y12
	VBROADCASTSS hi+76(FP), Y13
	MOVQ oh+56(FP), R8
	MOVQ ow+64(FP), R9

d2row:
	MOVQ SI, R11
	LEAQ (SI)(BX*1), R12
	MOVQ q+24(FP), R13
	LEAQ (SI)(R13*4), R13
	LEAQ (R13)(BX*1), R14
	LEAQ (SI)(R10*1), AX
	LEAQ (R12)(R10*1), DX
	MOVQ R9, CX

d2step:
	VMOVAPS Y9, Y10
	VFMADD231PS (R11), Y0, Y10
	VFMADD231PS (R12), Y1, Y10
	VFMADD231PS 4(R11), Y2, Y10
	VFMADD231PS (R13), Y3, Y10
	VFMADD231PS (R14), Y4, Y10
	VFMADD231PS 4(R13), Y5, Y10
	VFMADD231PS (AX), Y6, Y10
	VFMADD231PS (DX), Y7, Y10
	VFMADD231PS 4(AX), Y8, Y10
	VMAXPS Y10, Y12, Y10
	VMINPS Y10, Y13, Y10
	CMPQ CX, $8
	JLT d2tail
	VMOVUPS Y10, (DI)
	ADDQ $32, DI
	ADDQ $32, R11
	ADDQ $32, R12
	ADDQ $32, R13
	ADDQ $32, R14
	ADDQ $32, AX
	ADDQ $32, DX
	SUBQ $8, CX
	JNZ d2step
	JMP d2next

d2tail:
	// As in depthwise3x3AVX: a full store when the rows below hold the lanes past the
	// row's end, the last 8 outputs again on the last row of 8 or more, the mask only for
	// a short last row. The row pointers are free once the row's vector is made.
	MOVQ $8, R12
	SUBQ CX, R12      // lanes past the row's end
	MOVQ R8, R11
	DECQ R11
	IMULQ R9, R11     // values in the rows below
	CMPQ R11, R12
	JLT d2last
	VMOVUPS Y10, (DI)
	LEAQ (DI)(CX*4), DI
	JMP d2next

d2last:
	CMPQ R9, $8
	JLT d2mask
	// The row's last 8 outputs: the rows from their start, 4*(ow-8) bytes in.
	SUBQ $32, DI
	LEAQ (DI)(CX*4), DI
	LEAQ -32(R9*4), R12
	LEAQ (SI)(R12*1), R11 // phase 0
	LEAQ (R11)(BX*1), R13 // phase 1
	MOVQ q+24(FP), R14
	SHLQ $2, R14          // phases 2 and 3, from 0 and 1
	VMOVAPS Y9, Y10
	VFMADD231PS (R11), Y0, Y10
	VFMADD231PS (R13), Y1, Y10
	VFMADD231PS 4(R11), Y2, Y10
	VFMADD231PS (R11)(R14*1), Y3, Y10
	VFMADD231PS (R13)(R14*1), Y4, Y10
	VFMADD231PS 4(R11)(R14*1), Y5, Y10
	VFMADD231PS (R11)(R10*1), Y6, Y10
	VFMADD231PS (R13)(R10*1), Y7, Y10
	VFMADD231PS 4(R11)(R10*1), Y8, Y10
	VMAXPS Y10, Y12, Y10
	VMINPS Y10, Y13, Y10
	VMOVUPS Y10, (DI)
	ADDQ $32, DI
	JMP d2next

d2mask:
	LEAQ lanes<>(SB), R11
	VMOVUPS (R11)(R12*4), Y11
	VMASKMOVPS Y10, Y11, (DI)
	LEAQ (DI)(CX*4), DI

d2next:
	ADDQ R10, SI
	DECQ R8
	JNZ d2row
	VZEROUPPER
	RET

// func addRowsAVX(dst *float32, ldd int, src *float32, lds int, rows, n int)
//
// Blocks of 8 values, then the last n%8 through a mask (Y4) from lanes<>.
TEXT ·addRowsAVX(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ ldd+8(FP), R8
	SHLQ $2, R8
	MOVQ src+16(FP), SI
	MOVQ lds+24(FP), R9
	SHLQ $2, R9
	MOVQ rows+32(FP), CX
	MOVQ n+40(FP), DX
	MOVQ DX, R10
	ANDQ $-8, R10
	SHLQ $2, R10 // bytes in whole blocks
	MOVQ DX, R11
	ANDQ $7, R11 // values in the tail
	LEAQ lanes<>(SB), AX
	MOVQ $8, BX
	SUBQ R11, BX
	VMOVUPS (AX)(BX*4), Y4

arrow:
	XORQ AX, AX

arblock:
	CMPQ AX, R10
	JGE artail
	VMOVUPS (DI)(AX*1), Y0
	VADDPS (SI)(AX*1), Y0, Y0
	VMOVUPS Y0, (DI)(AX*1)
	ADDQ $32, AX
	JMP arblock

artail:
	TESTQ R11, R11
	JZ arnext
	VMASKMOVPS (DI)(AX*1), Y4, Y0
	VMASKMOVPS (SI)(AX*1), Y4, Y1
	VADDPS Y1, Y0, Y0
	VMASKMOVPS Y0, Y4, (DI)(AX*1)

arnext:
	ADDQ R8, DI
	ADDQ R9, SI
	DECQ CX
	JNZ arrow
	VZEROUPPER
	RET
