# bench.mk - included by the Makefile
