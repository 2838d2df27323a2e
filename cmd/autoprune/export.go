package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/autoprune/autoprune/nn/onnx"
)

func init() {
	register(&command{name: "export", summary: "write a model (dense, pruned or masked) as ONNX", run: runExport})
}

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("export", "export MODEL-FILE --onnx OUT.onnx", `
Writes a model as ONNX (opset 13, input "input" of shape N x C x H x W with a dynamic batch
N, float32 weights), for ONNX Runtime, TFLite converters or a phone SDK. A pruned model is
exported with its channels removed, so it is as fast there as here; a masked (unstructured)
model is exported with its masked weights as zeros.

Any command that reads a model file also reads .onnx files (models exported by
torch.onnx.export, for one), and "train --out" and "prune --out" write ONNX when the name
ends in .onnx.

Examples:
  autoprune export mobile-best.safetensors --onnx mobile-best.onnx
  autoprune export zoo:resnet-small --onnx resnet.onnx`, stderr)
	out := fs.String("onnx", "", "ONNX file to write (required)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("export: want exactly one model file, got %d arguments", len(pos))
	}
	if *out == "" {
		return usagef("export: --onnx OUT.onnx is required")
	}
	m, err := loadModelArg(pos[0])
	if err != nil {
		return asUsage(err)
	}
	if err := onnx.Save(*out, m); err != nil {
		return err
	}
	fi, err := os.Stat(*out)
	if err != nil {
		return err
	}
	params, macs, _ := m.Totals()
	fmt.Fprintf(stdout, "wrote %s: %s, %d params, %.3f M MACs, %d bytes (ONNX opset %d)\n", *out, m.Name, params, float64(macs)/1e6, fi.Size(), onnx.Opset)
	return nil
}
