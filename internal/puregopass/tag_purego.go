//go:build purego

package puregopass

const tagged = true
