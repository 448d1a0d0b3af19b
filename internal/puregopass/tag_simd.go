//go:build !purego

package puregopass

const tagged = false
