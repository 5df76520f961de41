"""recsys's own CPU embedding-bag kernels for serving row-wise quantized tables (int8, int4).

`kernels.ops` holds the Python entry points; the operators live in the compiled extension
`kernels._C` (torch.ops.recsys_kernels.*), built by the project's install step.
"""
