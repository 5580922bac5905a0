#!/bin/sh
echo script "$@"
