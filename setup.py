"""`pip install .` gives the pure-Python library (no ROS, no generated messages), e.g. for
training machines. Metadata and entry points live in setup.cfg; a ROS 2 workspace builds this
package with colcon (package.xml, CMakeLists.txt) instead."""
from setuptools import setup

setup()
