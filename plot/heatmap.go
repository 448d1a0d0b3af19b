package plot

import (
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Heatmap is a grid of values in [0, 1], one cell per (row, column),
// coloured from red (0) through yellow to green (1).
type Heatmap struct {
	Title, XLabel, YLabel string
	XTicks, YTicks        []string
	Values                [][]float64 // [row][column]
}

// WriteSVG writes h as an SVG document.
func (h *Heatmap) WriteSVG(w io.Writer) error {
	rows := len(h.Values)
	if rows == 0 || len(h.Values[0]) == 0 {
		return errors.New("plot: empty heatmap")
	}
	cols := len(h.Values[0])
	if len(h.YTicks) != rows || len(h.XTicks) != cols {
		return fmt.Errorf("plot: heatmap of %d×%d has %d row and %d column labels", rows, cols, len(h.YTicks), len(h.XTicks))
	}
	const cell, left, top = 44, 90, 50
	width, height := left+cols*cell+40, top+rows*cell+60
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%d" y="24" font-size="15">%s</text>`+"\n", left, html.EscapeString(h.Title))
	for r, row := range h.Values {
		if len(row) != cols {
			return fmt.Errorf("plot: heatmap row %d has %d values, want %d", r, len(row), cols)
		}
		y := top + r*cell
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-6, y+cell/2+4, html.EscapeString(h.YTicks[r]))
		for c, v := range row {
			if math.IsNaN(v) || v < 0 || v > 1 {
				return fmt.Errorf("plot: heatmap value %g at (%d, %d) outside [0, 1]", v, r, c)
			}
			x := left + c*cell
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s" stroke="white"/><text x="%d" y="%d" text-anchor="middle" font-size="11">%.2f</text>`+"\n",
				x, y, cell, cell, ramp(v), x+cell/2, y+cell/2+4, v)
		}
	}
	for c, l := range h.XTicks {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", left+c*cell+cell/2, top+rows*cell+16, html.EscapeString(l))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", left+cols*cell/2, height-14, html.EscapeString(h.XLabel))
	fmt.Fprintf(&b, `<text transform="translate(16,%d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+rows*cell/2, html.EscapeString(h.YLabel))
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// ramp maps [0, 1] to red → yellow → green.
func ramp(v float64) string {
	r, g := 1.0, 1.0
	if v < 0.5 {
		g = 2 * v
	} else {
		r = 2 * (1 - v)
	}
	return fmt.Sprintf("rgb(%d,%d,80)", int(40+200*r), int(40+180*g))
}
