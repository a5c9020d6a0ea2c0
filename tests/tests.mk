# tests.mk - included by the Makefile (owned by the tests work)
