"""Built-in plugins of mmreg, each registered through the `mmreg` entry-point group like a third party's."""
