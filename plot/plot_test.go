package plot

import (
	"encoding/xml"
	"math"
	"strings"
	"testing"
)

func TestWriteSVGIsWellFormed(t *testing.T) {
	c := &Chart{Title: "MSE <vs> bits", XLabel: "bits", YLabel: "mse", LogY: true, Series: []Series{
		{Name: "bound", X: []float64{1, 2, 3}, Y: []float64{0.25, 0.0625, 0.015625}, Dashed: true},
		{Name: "turbo & co", X: []float64{1, 2, 3}, Y: []float64{0.36, 0.117, 0.034}},
	}}
	var b strings.Builder
	if err := c.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(strings.NewReader(b.String()))
	polylines := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			polylines++
		}
	}
	if polylines != 2 {
		t.Errorf("%d polylines, want 2", polylines)
	}
	if !strings.Contains(b.String(), "turbo &amp; co") {
		t.Error("series name not escaped")
	}
}

func TestWriteSVGErrors(t *testing.T) {
	for _, c := range []*Chart{
		{},
		{LogY: true, Series: []Series{{X: []float64{1}, Y: []float64{0}}}},
		{Series: []Series{{X: []float64{1, 2}, Y: []float64{1}}}},
		{Series: []Series{{X: []float64{math.NaN()}, Y: []float64{1}}}},
	} {
		if err := c.WriteSVG(&strings.Builder{}); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestTicks(t *testing.T) {
	got := ticks(0, 4.5)
	if len(got) < 3 || got[0] != 0 || got[len(got)-1] > 4.5 {
		t.Errorf("ticks(0, 4.5) = %v", got)
	}
}

func TestHeatmap(t *testing.T) {
	h := &Heatmap{Title: "needle", XTicks: []string{"0", "0.5", "1"}, YTicks: []string{"512", "1024"}, Values: [][]float64{{1, 0.5, 0}, {1, 1, 0.25}}}
	var b strings.Builder
	if err := h.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "<rect x=") != 6 {
		t.Errorf("want 6 cells")
	}
	d := xml.NewDecoder(strings.NewReader(b.String()))
	for {
		if _, err := d.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Errorf("not well-formed XML: %v", err)
			}
			break
		}
	}
	for _, bad := range []*Heatmap{{}, {XTicks: []string{"a"}, YTicks: []string{"b"}, Values: [][]float64{{1.5}}}, {XTicks: []string{"a"}, YTicks: nil, Values: [][]float64{{1}}}} {
		if err := bad.WriteSVG(&strings.Builder{}); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
