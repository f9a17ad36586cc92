package templates

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestScreenshots photographs every golden HTML email in headless Chromium,
// full page at a 720px-wide viewport, into the directory named by
// LLMSPEND_SCREENSHOTS (skipped when unset). screenshot.sh wraps it.
//
// The PNGs are re-encoded as 256-colour palette images at best compression:
// an email is flat colours plus anti-aliased text, which a palette of its
// own most frequent colours reproduces faithfully at a third of the size,
// and the docs copies should stay small.
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("LLMSPEND_SCREENSHOTS")
	if dir == "" {
		t.Skip("set LLMSPEND_SCREENSHOTS=<dir> to take screenshots (needs chromium)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("hide-scrollbars", true),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	r := newRenderer(t, defaults())
	for _, name := range r.Names() {
		golden, err := filepath.Abs(filepath.Join("testdata", "golden", name+".html"))
		if err != nil {
			t.Fatal(err)
		}
		err = chromedp.Do(ctx,
			chromedp.EmulateViewport(720, 600), // the page grows to its content
			chromedp.Navigate("file://"+golden),
			// The remote logo fails offline; give it a moment either way.
			chromedp.Sleep(300*time.Millisecond),
		)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		img, err := png.Decode(bytes.NewReader(shot))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var buf bytes.Buffer
		enc := png.Encoder{CompressionLevel: png.BestCompression}
		if err := enc.Encode(&buf, quantize(img)); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "email-"+name+".png")
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %dx%d, %d bytes", path, img.Bounds().Dx(), img.Bounds().Dy(), buf.Len())
	}
}

// quantize maps img onto a palette of its 256 most frequent colours (nearest
// colour, no dithering: dithering would speckle the flat backgrounds).
func quantize(img image.Image) image.Image {
	b := img.Bounds()
	counts := map[color.RGBA]int{}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			counts[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)]++
		}
	}
	cols := make([]color.RGBA, 0, len(counts))
	for c := range counts {
		cols = append(cols, c)
	}
	sort.Slice(cols, func(i, j int) bool {
		if counts[cols[i]] != counts[cols[j]] {
			return counts[cols[i]] > counts[cols[j]]
		}
		ci, cj := cols[i], cols[j]
		return uint32(ci.R)<<16|uint32(ci.G)<<8|uint32(ci.B) < uint32(cj.R)<<16|uint32(cj.G)<<8|uint32(cj.B)
	})
	pal := make(color.Palette, 0, 256)
	for _, c := range cols[:min(256, len(cols))] {
		pal = append(pal, c)
	}
	out := image.NewPaletted(b, pal)
	idx := map[color.RGBA]uint8{}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			i, ok := idx[c]
			if !ok {
				i = uint8(pal.Index(c))
				idx[c] = i
			}
			out.SetColorIndex(x, y, i)
		}
	}
	return out
}
