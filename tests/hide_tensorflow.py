"""Code a test's subprocess runs first so that TensorFlow looks uninstalled there (issue #26's checks).

The path finder is wrapped so that it finds no `tensorflow` module: `import tensorflow` raises
ModuleNotFoundError and importlib.util.find_spec("tensorflow") is None, exactly as without the package (a finder
that raised ImportError instead would break libraries that only probe for TensorFlow, such as torch._dynamo).
Every attempt is recorded in `TENSORFLOW_LOOKUPS`.
"""

PRELUDE = '''
import importlib.abc, importlib.machinery, sys
TENSORFLOW_LOOKUPS = []
class _HideTensorFlow(importlib.abc.MetaPathFinder):
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            TENSORFLOW_LOOKUPS.append(name)
            return None
        return self.inner.find_spec(name, path, target)
    def invalidate_caches(self):
        self.inner.invalidate_caches()
sys.meta_path[:] = [_HideTensorFlow(f) if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
'''
