// bkinputs: buildctl's build, less its flags but --opt, --local, --out, and with --input
// NAME=FILE: a marshaled definition passed to the frontend by name (BuildKit's frontend
// inputs, which buildctl cannot pass). scripts/record_differential.py runs it for the cases
// that have inputs. Build it in a BuildKit v0.11.6 source tree:
//
//	mkdir cmd/bkinputs && cp scripts/bkinputs.go cmd/bkinputs/main.go
//	GOFLAGS=-mod=vendor CGO_ENABLED=0 go build -o bkinputs ./cmd/bkinputs
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/util/progress/progressui"
	"golang.org/x/sync/errgroup"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	addr := os.Getenv("BUILDKIT_HOST")
	attrs := map[string]string{}
	locals := map[string]string{}
	inputs := map[string]llb.State{}
	out := ""
	args := os.Args[1:]
	for i := 0; i+1 < len(args); i += 2 {
		k, v := args[i], args[i+1]
		name, val, _ := strings.Cut(v, "=")
		switch k {
		case "--opt":
			attrs[name] = val
		case "--local":
			locals[name] = val
		case "--input":
			data, err := os.ReadFile(val)
			if err != nil {
				return err
			}
			var def pb.Definition
			if err := def.Unmarshal(data); err != nil {
				return err
			}
			op, err := llb.NewDefinitionOp(&def)
			if err != nil {
				return err
			}
			inputs[name] = llb.NewState(op)
		case "--out":
			out = v
		}
	}
	ctx := context.Background()
	c, err := client.New(ctx, addr)
	if err != nil {
		return err
	}
	opt := client.SolveOpt{
		Frontend:       "dockerfile.v0",
		FrontendAttrs:  attrs,
		LocalDirs:      locals,
		FrontendInputs: inputs,
		Exports: []client.ExportEntry{{
			Type: "oci",
			Output: func(map[string]string) (io.WriteCloser, error) {
				if out == "-" {
					return os.Stdout, nil
				}
				return os.Create(out)
			},
		}},
	}
	ch := make(chan *client.SolveStatus)
	eg, ctx2 := errgroup.WithContext(ctx)
	eg.Go(func() error {
		_, err := c.Solve(ctx2, nil, opt, ch)
		return err
	})
	eg.Go(func() error {
		_, err := progressui.DisplaySolveStatus(context.TODO(), "", nil, os.Stderr, ch)
		return err
	})
	return eg.Wait()
}
