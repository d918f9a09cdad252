# coding: utf-8
import yaml
